"""The inputs stage on real files: every value arrives exactly, bad rows become rejects, bad files raise.

The public corpora (JSONTestSuite, csv-spectrum, the Big List of Naughty Strings) are read from
../shared/corpora next to the repository and never copied into it; their tests skip without them.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import zstandard
from click.testing import CliRunner
from pipeline_helpers import ROOT

from importer.api import engine
from importer.cli.app import main
from importer.columns import COLUMN, ERROR, LINE, RAW, RULE
from importer.errors import InputError
from importer.inputs.common import Batch, InputFile
from importer.inputs.reader import iter_batches, open_input

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
ABSENT = f"../shared/corpora is absent: {CORPORA} holds the public test corpora"
JSON_SUITE = CORPORA / "JSONTestSuite" / "test_parsing"
SPECTRUM = CORPORA / "csv-spectrum"
BLNS = CORPORA / "blns" / "blns.json"
BOM = b"\xef\xbb\xbf"
TRACK_SCHEMA = str(ROOT / "schemas" / "vero-track.toml")
HINT_QUOTES = "a quoted field ends with a quote followed by a separator"


# ------------------------------------------------------------------------------------- helpers


@dataclass
class Read:
    """Everything one input gave: its facts and its batches, with cells decoded from JSON text."""

    source: InputFile
    batches: list[Batch]

    @property
    def rows(self) -> dict[int, dict[str, Any]]:
        """Line -> row; absent keys and empty cells are None."""
        rows: dict[int, dict[str, Any]] = {}
        for batch in self.batches:
            for row in batch.frame.iter_rows(named=True):
                line = row.pop(LINE)
                assert line not in rows, f"line {line} read twice"
                rows[line] = {k: None if v is None else json.loads(v) for k, v in row.items()}
        return rows

    @property
    def rejects(self) -> dict[int, dict[str, Any]]:
        """Line -> the reject's RULE, ERROR, COLUMN and the rest of its columns as stored."""
        rejects: dict[int, dict[str, Any]] = {}
        for batch in self.batches:
            for row in batch.rejects.iter_rows(named=True):
                line = row.pop(LINE)
                assert line not in rejects, f"line {line} rejected twice"
                rejects[line] = row
        return rejects

    @property
    def blank_lines(self) -> int:
        return sum(batch.blank_lines for batch in self.batches)

    @property
    def cells(self) -> list[dict[str, str | None]]:
        """The rows' raw JSON text cells, in file order."""
        return [
            row for batch in self.batches for row in batch.frame.drop(LINE).iter_rows(named=True)
        ]


def present(row: dict[str, Any]) -> dict[str, Any]:
    """The row without its null cells."""
    return {key: value for key, value in row.items() if value is not None}


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read(path: Path, *, batch_rows: int = 100_000) -> Read:
    source = open_input(path)
    return Read(source, list(iter_batches(source, batch_rows=batch_rows)))


def read_bytes(tmp_path: Path, name: str, data: bytes | str, *, batch_rows: int = 100_000) -> Read:
    return read(write(tmp_path, name, data), batch_rows=batch_rows)


def input_error(path: Path) -> InputError:
    """The InputError that opening and reading `path` raises (the test fails if none does)."""
    with pytest.raises(InputError) as caught:
        read(path)
    return caught.value


def invoke(*args: str) -> tuple[int, str, str]:
    """Run the command line in process: exit code, stdout, stderr."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def corpus_files(folder: Path, pattern: str = "*") -> list[Any]:
    """One param per corpus file, id'd by its name; a single skipped param when it is absent."""
    if not folder.is_dir():
        return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT))]
    return [pytest.param(path, id=path.name) for path in sorted(folder.glob(pattern))]


def _as_text(value: Any) -> str:
    """A decoded cell as plain CSV text (csv-spectrum's expectations have no types, no nulls)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(ABSENT)
    return path


# ------------------------------------------------------------------------- formats and layout


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("in.csv", "id,name\n1,Ann\n2,Bob\n", id="csv"),
        pytest.param("in.tsv", "id\tname\n1\tAnn\n2\tBob\n", id="tsv"),
        pytest.param("IN.CSV", "id,name\n1,Ann\n2,Bob\n", id="csv-upper-case"),
        pytest.param("in.csv", "id,name\r\n1,Ann\r\n2,Bob\r\n", id="csv-crlf"),
        pytest.param("in.csv", "\ufeffid,name\n1,Ann\n2,Bob\n", id="csv-bom"),
        pytest.param("in.csv", '\ufeff"id","name"\n1,Ann\n2,Bob\n', id="csv-bom-quoted-header"),
        pytest.param("in.tsv", "\ufeffid\tname\r\n1\tAnn\r\n2\tBob\r\n", id="tsv-bom-crlf"),
        pytest.param("in.csv", "id,name\n1,Ann\n2,Bob", id="csv-no-final-newline"),
        pytest.param("in.jsonl", '{"id":1,"name":"Ann"}\n{"id":2,"name":"Bob"}\n', id="jsonl"),
        pytest.param("in.ndjson", '{"id":1,"name":"Ann"}\n{"id":2,"name":"Bob"}', id="ndjson"),
        pytest.param(
            "in.jsonl", '{"id":1,"name":"Ann"}\r\n{"id":2,"name":"Bob"}\r\n', id="jsonl-crlf"
        ),
        pytest.param(
            "in.jsonl", '\ufeff{"id":1,"name":"Ann"}\n{"id":2,"name":"Bob"}\n', id="jsonl-bom"
        ),
    ],
)
def test_every_format_reads_the_same_rows(tmp_path: Path, name: str, data: str) -> None:
    result = read_bytes(tmp_path, name, data)
    first = 1 if result.source.format == "jsonl" else 2
    assert result.rows == {first: {"id": 1, "name": "Ann"}, first + 1: {"id": 2, "name": "Bob"}}
    assert result.rejects == {}
    assert result.blank_lines == 0
    assert [c for c in result.batches[0].frame.columns if c != LINE] == ["id", "name"]


def test_quoted_fields_keep_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    data = (
        'id,text\r\n1,"a, b"\r\n2,"say ""hi"""\r\n3,"two\r\nlines"\r\n4,"lf\nonly"\r\n'
        '5,""\r\n6,\r\n7,"tab\there"\r\n'
    )
    result = read_bytes(tmp_path, "in.csv", data)
    assert {line: row["text"] for line, row in result.rows.items()} == {
        2: "a, b",
        3: 'say "hi"',
        4: "two\r\nlines",
        5: "lf\nonly",
        # A quoted empty field is an empty string; an empty cell is null.
        6: "",
        7: None,
        8: "tab\there",
    }


def test_a_quoted_line_break_in_the_header_is_part_of_the_name(tmp_path: Path) -> None:
    result = read_bytes(tmp_path, "in.csv", '"first\nname",age\nAnn,30\n')
    assert result.source.columns == ("first\nname", "age")
    assert result.rows == {2: {"first\nname": "Ann", "age": 30}}


@pytest.mark.parametrize(
    ("name", "data", "rows", "rejects"),
    [
        pytest.param("in.csv", b"a,b\n1,x\x00y\n2,z\n", {3: {"a": 2, "b": "z"}}, {2}, id="csv"),
        pytest.param(
            "in.jsonl",
            b'{"a":1}\n{"a":"x\x00y"}\n{"a":"\\u0000"}\n',
            {1: {"a": 1}},
            {2, 3},
            id="jsonl",
        ),
    ],
)
def test_a_raw_nul_is_a_character_not_a_sign_of_utf16(
    tmp_path: Path, name: str, data: bytes, rows: dict[int, Any], rejects: set[int]
) -> None:
    result = read_bytes(tmp_path, name, data)
    assert result.rows == rows
    assert set(result.rejects) == rejects


def test_input_facts(tmp_path: Path) -> None:
    data = "a,b\n1,2\n\n3,4\n"
    one = open_input(write(tmp_path, "one.csv", data))
    renamed = open_input(write(tmp_path, "renamed.csv", data))
    changed = open_input(write(tmp_path, "changed.csv", data.replace("4", "5")))
    assert one.fingerprint == renamed.fingerprint != changed.fingerprint
    assert (one.format, one.size, one.lines, one.records) == ("csv", len(data), 4, 3)
    assert (one.columns, one.header, one.name) == (("a", "b"), ("a", "b"), str(one.path))
    assert one.column_kinds == {"a": "integer", "b": "integer"}
    jsonl = open_input(write(tmp_path, "in.jsonl", '{"a":1}\nnot json\n{"b":2,"a":3}'))
    assert (jsonl.format, jsonl.lines, jsonl.columns) == ("jsonl", 2, ("a", "b"))


# ---------------------------------------------------------------------------------- CSV types


@pytest.mark.parametrize(
    ("values", "kind", "decoded"),
    [
        pytest.param(["007", "1"], "string", ["007", "1"], id="leading-zero"),
        pytest.param(["01234", "90210"], "string", ["01234", "90210"], id="zip-codes"),
        pytest.param(["1", "-2", "0"], "integer", [1, -2, 0], id="integers"),
        pytest.param(["9007199254740993"], "integer", [9007199254740993], id="beyond-double"),
        pytest.param(["-9223372036854775808"], "integer", [-(2**63)], id="int64-min"),
        pytest.param(
            ["99999999999999999999", "1"],
            "string",
            ["99999999999999999999", "1"],
            id="beyond-int64",
        ),
        pytest.param(["1.5", "2", "-0.25"], "number", [1.5, 2, -0.25], id="numbers"),
        pytest.param(["1.50"], "string", ["1.50"], id="trailing-zero"),
        pytest.param(["1e5"], "string", ["1e5"], id="exponent-that-reformats"),
        pytest.param(["-0"], "string", ["-0"], id="minus-zero"),
        pytest.param(["+1"], "string", ["+1"], id="plus-sign"),
        pytest.param([" 1"], "string", [" 1"], id="space"),
        pytest.param([".5"], "string", [".5"], id="bare-fraction"),
        pytest.param(["NaN", "inf"], "string", ["NaN", "inf"], id="not-finite"),
        pytest.param(["0x1F"], "string", ["0x1F"], id="hex"),
        pytest.param(["1_000"], "string", ["1_000"], id="underscore"),
        pytest.param(["true", "false"], "boolean", [True, False], id="booleans"),
        pytest.param(["True", "FALSE"], "string", ["True", "FALSE"], id="capitalised-booleans"),
        pytest.param(["true", "1"], "string", ["true", "1"], id="boolean-and-number"),
        pytest.param(["1", "", "2"], "integer", [1, None, 2], id="empty-cell-is-null"),
        pytest.param(["", ""], "integer", [None, None], id="all-empty"),
        pytest.param(["1", "x"], "string", ["1", "x"], id="late-text"),
    ],
)
def test_a_csv_column_is_a_number_only_when_every_value_round_trips(
    tmp_path: Path, values: list[str], kind: str, decoded: list[Any]
) -> None:
    data = "n,v\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values))
    result = read_bytes(tmp_path, "in.csv", data)
    assert result.source.column_kinds["v"] == kind
    assert [row["v"] for row in result.rows.values()] == decoded


def test_cells_are_json_text(tmp_path: Path) -> None:
    data = 'zip,n,big,flag,note\n01234,1.5,9007199254740993,true,"{""a"":1}"\n,,,,\n'
    result = read_bytes(tmp_path, "in.csv", data)
    assert result.cells == [
        {
            "zip": '"01234"',
            "n": "1.5",
            "big": "9007199254740993",
            "flag": "true",
            "note": '"{\\"a\\":1}"',
        },
        dict.fromkeys(("zip", "n", "big", "flag", "note")),
    ]


def test_a_late_text_value_keeps_the_whole_column_text_across_batches(tmp_path: Path) -> None:
    lines = [f"{i},{i}" for i in range(1, 1001)] + ["1001,n/a"]
    path = write(tmp_path, "in.csv", "id,score\n" + "\n".join(lines) + "\n")
    result = read(path, batch_rows=100)
    assert result.source.column_kinds == {"id": "integer", "score": "string"}
    assert len(result.batches) == 11
    assert result.batches[0].frame["score"][0] == '"1"'
    assert result.rows[1002] == {"id": 1001, "score": "n/a"}


# -------------------------------------------------------------------------------- JSONL types


def test_jsonl_values_keep_their_json_types(tmp_path: Path) -> None:
    lines = [
        '{"s":"007","i":9007199254740993,"f":1.5,"b":true,"n":null,"o":{"a":[1,{"b":2.0}]}}',
        '{"s":"é\\u00e9\\ud83d\\ude00","i":1.25,"f":3,"a":[],"o":{}}',
    ]
    result = read_bytes(tmp_path, "in.jsonl", "\n".join(lines))
    assert result.cells == [
        {
            "s": '"007"',
            "i": "9007199254740993",
            "f": "1.5",
            "b": "true",
            "n": "null",
            "o": '{"a":[1,{"b":2.0}]}',
            "a": None,
        },
        {"s": '"éé😀"', "i": "1.25", "f": "3", "b": None, "n": None, "o": "{}", "a": "[]"},
    ]


@pytest.mark.parametrize(
    "written", ["1e3", "1E3", "2.50", "-0.0", "1.0e-2", "12345678901234567890.5"]
)
def test_a_jsonl_number_keeps_the_text_it_was_written_as_and_so_does_its_id(
    tmp_path: Path, written: str
) -> None:
    line = f'{{"user_id":{written},"email":"a@b.co","event":"Viewed",'
    line += f'"occurred_at":"2024-01-01T00:00:00Z","n":{written}}}'
    result = read_bytes(tmp_path, "in.jsonl", line)
    assert result.cells[0]["user_id"] == written
    out = tmp_path / "out.jsonl"
    made = CliRunner().invoke(
        main,
        ["run", str(tmp_path / "in.jsonl"), "--mapping", str(ROOT / "schemas" / "vero-track.toml"),
         "--dry-run", "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    body = out.read_text().splitlines()[0]
    assert json.loads(body)["body"]["identity"]["id"] == written  # never "1000.0"
    assert f'"n":{written},' in body


def test_jsonl_ints_and_floats_do_not_widen_and_late_type_changes_keep_values(
    tmp_path: Path,
) -> None:
    lines = [json.dumps({"id": i, "v": 9007199254740993 + i}) for i in range(500)]
    lines += ['{"id":500,"v":0.5}', '{"id":501,"v":"text"}', '{"id":502,"v":{"x":1}}']
    result = read_bytes(tmp_path, "in.jsonl", "\n".join(lines))
    values = [row["v"] for row in result.rows.values()]
    assert values[:500] == [9007199254740993 + i for i in range(500)]
    assert values[500:] == [0.5, "text", {"x": 1}]
    assert result.cells[0]["v"] == "9007199254740993"


def test_jsonl_keys_first_seen_late_are_kept(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i}) for i in range(150)] + ['{"id":150,"late":"x"}']
    lines += [json.dumps({"id": i}) for i in range(151, 400)]
    lines.append('{"id":400,"later":[1]}')
    path = write(tmp_path, "in.jsonl", "\n".join(lines) + "\n")
    one = read(path)
    assert one.rows[151] == {"id": 150, "late": "x", "later": None}
    assert one.rows[401] == {"id": 400, "late": None, "later": [1]}
    # In batches of 100, a key first seen in a later batch is in that batch's frame.
    batches = read(path, batch_rows=100).batches
    assert [batch.frame.height for batch in batches] == [100, 100, 100, 100, 1]
    assert "late" not in batches[0].frame.columns
    assert batches[1].frame.filter(pl.col(LINE) == 151)["late"].to_list() == ['"x"']
    assert batches[4].frame.columns == [LINE, "id", "later"]


@pytest.mark.parametrize(
    ("line", "key"),
    [
        pytest.param('{"user_id":"u1","user_id":"u2"}', "user_id", id="top-level"),
        pytest.param('{"a":1,"a":1}', "a", id="same-value"),
        pytest.param('{"d":{"x":1,"y":2,"x":3}}', "x", id="nested"),
        pytest.param('{"d":[{"k":1},{"k":1,"k":2}]}', "k", id="in-an-array"),
        pytest.param('{"é":1,"é":2}', "é", id="non-ascii"),
    ],
)
def test_a_repeated_jsonl_key_is_a_reject(tmp_path: Path, line: str, key: str) -> None:
    """json keeps the last value of a repeated key: that silently changed a row's user."""
    result = read_bytes(tmp_path, "in.jsonl", f'{{"ok":1,"d":{{"x":1}}}}\n{line}\n')
    assert result.rows == {1: {"ok": 1, "d": {"x": 1}}}
    assert result.rejects == {
        2: {
            RULE: "json",
            COLUMN: None,
            ERROR: f'key "{key}" appears twice in one object',
            RAW: line,
        }
    }


# ----------------------------------------------------------------------------- JSONL bad rows


@pytest.mark.parametrize(
    ("line", "rule", "error"),
    [
        pytest.param(
            "{bad",
            "json",
            "line is not valid JSON: Expecting property name enclosed in double quotes (column 2)",
            id="not-json",
        ),
        pytest.param(
            '{"a":1} x', "json", "line is not valid JSON: Extra data (column 9)", id="extra-data"
        ),
        pytest.param(
            '{"a":1', "json", "line is not valid JSON: Expecting ',' delimiter (column 7)", id="cut"
        ),
        pytest.param("[1]", "json_object", "line is a JSON array, not an object", id="array"),
        pytest.param('"s"', "json_object", "line is a JSON string, not an object", id="string"),
        pytest.param("12", "json_object", "line is a JSON number, not an object", id="integer"),
        pytest.param("1.5", "json_object", "line is a JSON number, not an object", id="float"),
        pytest.param("true", "json_object", "line is a JSON boolean, not an object", id="boolean"),
        pytest.param("null", "json_object", "line is a JSON null, not an object", id="null"),
        pytest.param('{"a":NaN}', "json", "line is not valid JSON: NaN is not JSON", id="nan"),
        pytest.param(
            '{"a":-Infinity}', "json", "line is not valid JSON: -Infinity is not JSON", id="inf"
        ),
        pytest.param(
            '{"a":1e400}',
            "json",
            "line is not valid JSON: number 1e400 is too large for a double",
            id="huge-number",
        ),
        pytest.param(
            '{"a":"\\ud800"}',
            "json",
            "a string holds a lone UTF-16 surrogate escape",
            id="lone-high-surrogate",
        ),
        pytest.param(
            '{"\\uDC00":1}',
            "json",
            "a string holds a lone UTF-16 surrogate escape",
            id="lone-low-surrogate-key",
        ),
        pytest.param(
            "[" * 100_000 + "]" * 100_000, "json", "line is nested too deeply", id="deep-nesting"
        ),
        pytest.param(
            '\ufeff{"a":1}',
            "json",
            "line is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) (column 1)",
            id="bom-after-line-1",
        ),
        pytest.param(
            "\f", "json", "line is not valid JSON: Expecting value (column 1)", id="form-feed"
        ),
        pytest.param(
            '{"a":"x\ty"}',
            "json",
            "line is not valid JSON: Invalid control character at column 8",
            id="raw-tab-in-string",
        ),
        pytest.param(
            '{"a":"open',
            "json",
            "line is not valid JSON: Unterminated string starting at column 6",
            id="unterminated-string",
        ),
        pytest.param(
            '{"__line":7}',
            "json_object",
            "key(s) '__line' cannot be column names here (the importer's own, or a pattern "
            "to Polars)",
            id="reserved-key",
        ),
        pytest.param(
            '{"^x.*$":7,"*":1}',
            "json_object",
            "key(s) '*', '^x.*$' cannot be column names here (the importer's own, or a pattern "
            "to Polars)",
            id="pattern-keys",
        ),
    ],
)
def test_a_bad_jsonl_line_is_a_reject_and_its_neighbours_survive(
    tmp_path: Path, line: str, rule: str, error: str
) -> None:
    data = '{"id":1}\n' + line + '\r\n{"id":3}\n'
    result = read_bytes(tmp_path, "in.jsonl", data)
    assert result.rows == {1: {"id": 1}, 3: {"id": 3}}
    assert result.rejects == {2: {RULE: rule, COLUMN: None, ERROR: error, RAW: line}}


def test_surrogate_pairs_and_escaped_backslashes_are_not_lone_surrogates(tmp_path: Path) -> None:
    data = '{"a":"\\ud83d\\ude00","b":"\\\\ud800"}\n'
    assert read_bytes(tmp_path, "in.jsonl", data).rows == {1: {"a": "😀", "b": "\\ud800"}}


def test_jsonl_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    data = '\n{"id":1}\n  \n\t\r\n{"id":5}\n\n'
    result = read_bytes(tmp_path, "in.jsonl", data)
    assert result.rows == {2: {"id": 1}, 5: {"id": 5}}
    assert (result.rejects, result.blank_lines) == ({}, 4)


# ------------------------------------------------------------------------------- CSV bad rows


@pytest.mark.parametrize(
    ("record", "fields", "cells"),
    [
        pytest.param("1", 1, {"a": 1, "b": None, "c": None}, id="one-short"),
        pytest.param("1,2", 2, {"a": 1, "b": 2, "c": None}, id="two-short"),
        pytest.param("1,2,3,4", 4, {"a": 1, "b": 2, "c": 3}, id="one-long"),
        pytest.param("1,2,3,4,5,6", 6, {"a": 1, "b": 2, "c": 3}, id="three-long"),
        pytest.param('1,2,"3",4,"5"', 5, {"a": 1, "b": 2, "c": 3}, id="long-and-quoted"),
        pytest.param("1,2,3,", 4, {"a": 1, "b": 2, "c": 3}, id="trailing-separator"),
        pytest.param("   ", 1, {"a": "   ", "b": None, "c": None}, id="only-spaces"),
    ],
)
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_a_csv_record_with_the_wrong_field_count_is_a_reject(
    tmp_path: Path, record: str, fields: int, cells: dict[str, Any], position: str
) -> None:
    good = ["7,8,9", "10,11,12"]
    records = {"first": [record, *good], "middle": [good[0], record, good[1]]}
    records["last"] = [*good, record]
    result = read_bytes(tmp_path, "in.csv", "a,b,c\n" + "\n".join(records[position]) + "\n")
    line = records[position].index(record) + 2
    assert set(result.rows) == {2, 3, 4} - {line}
    assert all(len(row) == 3 for row in result.rows.values())
    (reject,) = result.rejects.values()
    assert list(result.rejects) == [line]
    stored = {
        k: None if v is None else json.loads(v) for k, v in reject.items() if k in ("a", "b", "c")
    }
    assert stored == cells
    assert {k: reject[k] for k in (RULE, COLUMN, ERROR)} == {
        RULE: "csv_fields",
        COLUMN: None,
        ERROR: f"record has {fields} fields, the header has 3",
    }
    assert list(result.batches[0].rejects.columns) == [LINE, RULE, COLUMN, ERROR, "a", "b", "c"]


def test_csv_lines_count_records_as_a_spreadsheet_numbers_rows(tmp_path: Path) -> None:
    # Row 1 is the header; a record with a quoted line break is one row, a blank line is a row.
    data = 'id,note\n1,"two\nlines"\n\n3,x\n4,"a\r\nb\nc"\n5,y,extra\n\n\n8,z\n'
    result = read_bytes(tmp_path, "in.csv", data)
    assert {line: row["id"] for line, row in result.rows.items()} == {2: 1, 4: 3, 5: 4, 9: 8}
    assert list(result.rejects) == [6]
    assert result.blank_lines == 3
    assert result.source.records == 8


def test_csv_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    result = read_bytes(tmp_path, "in.csv", "a,b\n\n1,2\r\n\r\n3,4\n\n\n")
    assert result.rows == {3: {"a": 1, "b": 2}, 5: {"a": 3, "b": 4}}
    assert (result.rejects, result.blank_lines) == ({}, 4)


def test_a_one_column_csv_tells_a_blank_line_from_an_empty_value(tmp_path: Path) -> None:
    result = read_bytes(tmp_path, "in.csv", 'name\nAnn\n\n""\nBob\n')
    assert result.rows == {2: {"name": "Ann"}, 4: {"name": ""}, 5: {"name": "Bob"}}
    assert result.blank_lines == 1


# ---------------------------------------------------------------------------------- bad files


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert str(input_error(path)) == f"{path}: no such file"


def test_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "folder.jsonl"
    path.mkdir()
    assert str(input_error(path)) == f"{path}: is a directory, not a file"


@pytest.mark.parametrize("name", ["in.txt", "in.jsn", "in", "in.gz", "in.txt.zst", "in.parquet.gz"])
def test_an_unknown_ending(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "a,b\n1,2\n")
    assert str(input_error(path)) == (
        f"{path}: cannot tell the format from the name (known endings: .csv, .json, .jsonl, "
        ".ndjson, .parquet, .tsv; text formats also compressed, as .gz/.zst)"
    )


@pytest.mark.parametrize("name", ["export.json", "export.json.gz"])
def test_a_named_json_file_is_read_as_json_lines(tmp_path: Path, name: str) -> None:
    # Amplitude's export: .json.gz files holding one JSON object per line.
    text = '{"user_id":"u1","n":1}\n{"user_id":"u2","n":2}\n'
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    source = open_input(path)
    assert source.format == "jsonl"
    frame = pl.concat([b.frame for b in iter_batches(source)])
    assert frame["user_id"].to_list() == ['"u1"', '"u2"']


@pytest.mark.parametrize("first", ["[", "{"])
def test_a_json_document_is_refused_saying_it_is_not_json_lines(tmp_path: Path, first: str) -> None:
    body = '[{"a": 1}]\n' if first == "[" else '{\n  "a": 1\n}\n'
    path = write(tmp_path, "dump.json", body)
    assert "not JSON lines" in str(input_error(path))


def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "in.csv", "a\n1\n")

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    assert str(input_error(path)) == f"{path}: cannot be read (Permission denied)"


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl"])
@pytest.mark.parametrize(
    ("encoding", "text", "said"),
    [
        pytest.param("utf-16", "a,b\n1,2\n", "UTF-16", id="utf16-bom"),
        pytest.param("utf-16-le", "a,b\n1,2\n", "UTF-16", id="utf16le-no-bom"),
        pytest.param("utf-16-be", "a,b\n1,2\n", "UTF-16", id="utf16be-no-bom"),
        pytest.param("utf-16-le", '{"a":"é"}\n', "UTF-16", id="utf16le-json"),
        pytest.param("utf-32", "a,b\n1,2\n", "UTF-32", id="utf32-bom"),
    ],
)
def test_a_utf16_file(tmp_path: Path, name: str, encoding: str, text: str, said: str) -> None:
    path = write(tmp_path, name, text.encode(encoding))
    error = input_error(path)
    assert str(error) == f"{path}: the file is {said}, not UTF-8"
    assert error.hint == f"convert it first, e.g. iconv -f {said} -t UTF-8 {path} > utf8-{name}"


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_cr_only_line_endings(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "a,b\r1,2\r" if name.endswith("csv") else '{"a":1}\r{"a":2}\r')
    assert str(input_error(path)) == (
        f"{path}: lines end with CR only (old Mac style); only LF and CRLF are read"
    )


@pytest.mark.parametrize(
    ("name", "data", "line", "column", "bad"),
    [
        pytest.param("in.csv", b"a,b\n1,caf\xe9\n", 2, 6, "e9", id="latin1"),
        pytest.param("in.csv", b"a,\xff\n1,2\n", 1, 3, "ff", id="header"),
        pytest.param("in.csv", BOM + b"a,\xff\n1,2\n", 1, 3, "ff", id="after-bom"),
        pytest.param("in.tsv", b"a\tb\n\xc3\xa9\t\xc3(\n", 2, 3, "c3", id="broken-sequence"),
        pytest.param("in.csv", b"a,b\n1,2\n\xe2\x82", 3, 1, "e2 82", id="truncated-at-end"),
        pytest.param("in.csv", b"a,b\n1,\xed\xa0\x80\n", 2, 3, "ed", id="encoded-surrogate"),
        pytest.param("in.jsonl", b'{"a":1}\n\n{"\xe9":2}\n', 3, 3, "e9", id="jsonl"),
        pytest.param("in.jsonl", b'{"a":"\xf0\x9f\x98\x80\x80"}', 1, 8, "80", id="after-emoji"),
    ],
)
def test_bytes_that_are_not_utf8(
    tmp_path: Path, name: str, data: bytes, line: int, column: int, bad: str
) -> None:
    path = write(tmp_path, name, data)
    error = input_error(path)
    assert str(error) == f"{path}, line {line}, column {column}: bytes {bad} are not UTF-8"
    assert 'the line encoding = "cp1252" in the mapping\'s [repairs] table' in error.hint
    assert f"iconv -f CP1252 -t UTF-8 {name} > utf8-{name}" in error.hint


def test_a_windows_1252_export_is_named_with_what_its_bytes_read(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", "id,name\n1,Müller café\n".encode("cp1252"))
    error = input_error(path)
    assert error.hint == (
        "in Windows-1252, as spreadsheets export, the bytes read 'ü': declare the file's "
        'encoding with the line encoding = "cp1252" in the mapping\'s [repairs] table '
        '(encoding = "latin-1" for ISO-8859-1), or convert the file to UTF-8: '
        "iconv -f CP1252 -t UTF-8 in.csv > utf8-in.csv"
    )


def test_bytes_windows_1252_leaves_undefined_are_offered_as_latin1(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", b"id,name\n1,a\x81b\n")  # 0x81: a C1 control in Latin-1
    error = input_error(path)
    assert str(error) == f"{path}, line 2, column 4: bytes 81 are not UTF-8"
    assert error.hint == (
        "they are not Windows-1252 either: declare the file's encoding with the line "
        'encoding = "latin-1" in the mapping\'s [repairs] table, or convert the file to UTF-8: '
        "iconv -f LATIN1 -t UTF-8 in.csv > utf8-in.csv"
    )


def test_bad_bytes_beyond_the_first_megabyte_name_their_line(tmp_path: Path) -> None:
    rows = [f"{i},{'x' * 100}" for i in range(12_000)]  # about 1.3 MB
    rows[11_000] = "11000,ok\xe9"
    path = write(tmp_path, "in.csv", ("id,text\n" + "\n".join(rows) + "\n").encode("latin-1"))
    assert str(input_error(path)) == f"{path}, line 11002, column 9: bytes e9 are not UTF-8"


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        pytest.param('a,b\n1,2\n"x"y,3\n', 3, "',' expected after '\"'", id="text-after-quote"),
        pytest.param(
            'a,b\n1,2\n"open,3\n4,5\n', 3, "unexpected end of data", id="unterminated-quote"
        ),
        pytest.param(
            'a,b\n"two\nlines",1\n2,"open\n', 4, "unexpected end of data", id="after-quoted-newline"
        ),
        pytest.param(
            'a,b\n1,2\n12" pizza,3\n4,5\n',
            3,
            "a quote inside a field that is not quoted, or text after a closing quote",
            id="bare-quote",
        ),
        pytest.param(
            "a,b\n1,2\n3\r4,5\n",
            3,
            "a lone CR inside a field that is not quoted",
            id="lone-cr",
        ),
        pytest.param(
            'a,b\n1,2\n"x" ,3\n', 3, "',' expected after '\"'", id="space-after-closing-quote"
        ),
    ],
)
def test_broken_csv_quoting_names_the_line(
    tmp_path: Path, data: str, line: int, reason: str
) -> None:
    path = write(tmp_path, "in.csv", data)
    error = input_error(path)
    assert str(error) == f"{path}, line {line}: the CSV quoting is broken ({reason})"
    assert error.hint is not None
    assert HINT_QUOTES in error.hint


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('a,b\n1,2\nsay "hi",5\n', id="quote-pair"),
        pytest.param('a,b\n1,2\n12" pizza,5', id="bare-quote-on-the-last-line"),
    ],
)
def test_quotes_inside_an_unquoted_field_that_both_parsers_read_as_text(
    tmp_path: Path, data: str
) -> None:
    # Python's csv and Polars agree here, so the value is kept; where they would not (a bare
    # quote followed by more lines), the file is refused with the line, as above.
    result = read_bytes(tmp_path, "in.csv", data)
    assert result.rows[3] == {"a": data.splitlines()[2].split(",")[0], "b": 5}


UNUSABLE = (
    "cannot be column names here (the importer's own, or a pattern to Polars); rename the column(s)"
)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        pytest.param("a,,b", "header column(s) [2] have no name", id="empty-name"),
        pytest.param("a, ,b,", "header column(s) [2, 4] have no name", id="blank-names"),
        pytest.param("a,b,a", "header names 'a' more than once", id="duplicate"),
        pytest.param("a,__line", f"header names '__line' {UNUSABLE}", id="reserved"),
        pytest.param(
            "__rule,__extra_fields",
            f"header names '__extra_fields', '__rule' {UNUSABLE}",
            id="reserved-two",
        ),
        pytest.param(
            "a,__naive,__text:a,__t_text",
            f"header names '__naive', '__t_text', '__text:a' {UNUSABLE}",
            id="internal-prefixes",
        ),
        pytest.param(
            "a,__outside,__epoch:a",
            f"header names '__epoch:a', '__outside' {UNUSABLE}",
            id="validation-columns",
        ),
        pytest.param(
            "a,__filtered,__dropped,__repair:a",
            f"header names '__dropped', '__filtered', '__repair:a' {UNUSABLE}",
            id="repair-columns",
        ),
        pytest.param("^a.*$,ab", f"header names '^a.*$' {UNUSABLE}", id="regex"),
        pytest.param("a,*", f"header names '*' {UNUSABLE}", id="wildcard"),
    ],
)
def test_a_bad_header(tmp_path: Path, header: str, message: str) -> None:
    path = write(tmp_path, "in.csv", header + "\n1,2,3\n")
    assert str(input_error(path)) == f"{path}, line 1: {message}"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("in.csv", b"", id="csv-empty"),
        pytest.param("in.tsv", b"", id="tsv-empty"),
        pytest.param("in.jsonl", b"", id="jsonl-empty"),
        pytest.param("in.csv", BOM, id="csv-bom-only"),
        pytest.param("in.jsonl", BOM, id="jsonl-bom-only"),
        pytest.param("in.csv", b"a,b", id="csv-header-only"),
        pytest.param("in.csv", b"a,b\r\n", id="csv-header-line-only"),
        pytest.param("in.tsv", BOM + b"a\tb\n", id="tsv-bom-header-only"),
        pytest.param("in.csv", b"_file,_line,_rule,_error\n1,2,3,4\n", id="only-reject-columns"),
    ],
)
def test_an_empty_or_header_only_file_has_no_batches(
    tmp_path: Path, name: str, data: bytes
) -> None:
    assert read_bytes(tmp_path, name, data).batches == []


def test_a_file_of_blank_lines_after_the_header_has_no_rows(tmp_path: Path) -> None:
    csv_ = read_bytes(tmp_path, "in.csv", "a,b\n\n\r\n")
    assert (csv_.rows, csv_.rejects, csv_.blank_lines) == ({}, {}, 2)


# ------------------------------------------------------------------------------ rejects files


@pytest.mark.parametrize(
    ("header", "columns"),
    [
        pytest.param("_file,_line,_rule,_error,_raw,id,email", ("id", "email"), id="all-meta"),
        pytest.param("_file,_line,_rule,_error,id,email", ("id", "email"), id="without-raw"),
        pytest.param(
            "_file,_line,_rule,id,email", ("_file", "_line", "_rule", "id", "email"), id="three"
        ),
        pytest.param("_raw,id,email", ("_raw", "id", "email"), id="raw-alone"),
    ],
)
def test_a_rejects_file_can_be_read_again(
    tmp_path: Path, header: str, columns: tuple[str, ...]
) -> None:
    values = {"_file": "a.csv", "_line": "7", "_rule": "r", "_error": "e", "_raw": "x"}
    values |= {"id": "7", "email": "a@example.com"}
    row = ",".join(values[name] for name in header.split(","))
    result = read_bytes(tmp_path, "in.csv", f"{header}\n{row}\n")
    assert result.source.columns == columns
    assert result.batches[0].frame.columns == [LINE, *columns]
    assert result.rows[2]["email"] == "a@example.com"


def test_a_jsonl_rejects_file_can_be_read_again(tmp_path: Path) -> None:
    line = {"_file": "a.jsonl", "_line": 3, "_rule": "json", "_error": "e", "_raw": "{", "id": 1}
    result = read_bytes(tmp_path, "in.jsonl", json.dumps(line) + "\n")
    assert result.rows == {1: {"id": 1}}


# ---------------------------------------------------------------------------- batch boundaries


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 7])
def test_csv_batches_across_bad_and_blank_lines(tmp_path: Path, batch_rows: int) -> None:
    records = ["1,a", "", "3", "4,d", "", "", '7,"x\ny"', "8,h,extra", "9,i", "", "11,k"]
    result = read_bytes(
        tmp_path, "in.csv", "id,v\n" + "\n".join(records) + "\n", batch_rows=batch_rows
    )
    for batch in result.batches:
        assert 0 < batch.frame.height + batch.rejects.height + batch.blank_lines <= batch_rows
    assert {line: row["id"] for line, row in result.rows.items()} == {
        2: 1,
        5: 4,
        8: 7,
        10: 9,
        12: 11,
    }
    assert list(result.rejects) == [4, 9]
    assert result.blank_lines == 4
    lines = [line for batch in result.batches for line in batch.frame[LINE]]
    assert lines == sorted(lines)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 7])
def test_jsonl_batches_across_bad_and_blank_lines(tmp_path: Path, batch_rows: int) -> None:
    lines = ['{"id":1}', "", "[3]", '{"id":4}', "", "", "{oops", '{"id":8,"k":"late"}', '{"id":9}']
    result = read_bytes(tmp_path, "in.jsonl", "\n".join(lines) + "\n", batch_rows=batch_rows)
    for batch in result.batches:
        assert 0 < batch.frame.height + batch.rejects.height <= batch_rows
    assert {line: present(row) for line, row in result.rows.items()} == {
        1: {"id": 1},
        4: {"id": 4},
        8: {"id": 8, "k": "late"},
        9: {"id": 9},
    }
    # A key first seen in a batch is a column of that batch only.
    assert ("k" in result.rows[9]) == (batch_rows > 1)
    assert ("k" in result.rows[1]) == (batch_rows == 7)
    assert {line: reject[RULE] for line, reject in result.rejects.items()} == {
        3: "json_object",
        7: "json",
    }
    assert result.blank_lines == 3


def test_a_thousand_row_csv_keeps_its_line_numbers(tmp_path: Path) -> None:
    records: list[str] = []
    expected: dict[int, int] = {}
    rejects: list[int] = []
    for i in range(1000):
        line = len(records) + 2
        if i % 97 == 0:
            records.append("")  # a blank row
            line += 1
        if i % 101 == 0:
            records.append(f'{i},"multi\nline {i}"')
            expected[line] = i
        elif i % 113 == 0:
            records.append(f"{i},too,many")
            rejects.append(line)
        else:
            records.append(f"{i},plain {i}")
            expected[line] = i
    path = write(tmp_path, "in.csv", "id,text\n" + "\n".join(records) + "\n")
    for batch_rows in (64, 1000):
        result = read(path, batch_rows=batch_rows)
        assert {line: row["id"] for line, row in result.rows.items()} == expected
        assert list(result.rejects) == rejects
        assert result.blank_lines == 11


def test_a_thousand_line_jsonl_keeps_its_line_numbers(tmp_path: Path) -> None:
    lines = []
    for i in range(1, 1001):
        if i % 89 == 0:
            lines.append("")
        elif i % 97 == 0:
            lines.append(f'{{"id":{i},')
        else:
            lines.append(json.dumps({"id": i, f"k{i % 7}": i}))
    path = write(tmp_path, "in.jsonl", "\n".join(lines) + "\n")
    result = read(path, batch_rows=128)
    assert all(row["id"] == line for line, row in result.rows.items())
    assert len(result.rows) == 1000 - 11 - 10
    assert list(result.rejects) == [i for i in range(97, 1001, 97)]
    assert result.blank_lines == 11
    assert result.source.lines == 1000


def test_csv_files_written_by_python_read_back_exactly(tmp_path: Path) -> None:
    """Seeded random records with separators, quotes, CR/LF and ragged lengths: what Python's csv
    writes and reads back, the reader gives row for row (or rejects, when the length is wrong)."""
    rng = random.Random(20240601)
    alphabet = ["a", "1", ",", '"', "\n", "\r\n", "\r", " ", "é", "\t", "0", ".", "-", "😀"]
    for case in range(120):
        rows = [["h1", "h2", "h3"]]
        for _ in range(rng.randint(0, 8)):
            width = rng.choice([3, 3, 3, 3, 0, 1, 2, 4, 5])
            rows.append(["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(width)])
        buffer = io.StringIO(newline="")
        # QUOTE_ALL: QUOTE_MINIMAL leaves a lone CR unquoted, which Python's own reader splits.
        csv.writer(
            buffer, lineterminator=rng.choice(["\n", "\r\n"]), quoting=csv.QUOTE_ALL
        ).writerows(rows)
        text = buffer.getvalue()
        if case % 2 and rows[-1]:
            text = text.removesuffix("\n").removesuffix("\r")
        result = read(write(tmp_path, f"case{case}.csv", text), batch_rows=rng.randint(1, 5))
        expected = {
            index + 2: row if len(row) == 3 else "reject"
            for index, row in enumerate(rows[1:])
            if row
        }
        got: dict[int, Any] = {
            line: [_as_text(row[c]) for c in ("h1", "h2", "h3")]
            for line, row in result.rows.items()
        }
        got |= dict.fromkeys(result.rejects, "reject")
        assert got == expected, text


def test_any_csv_reads_as_pythons_csv_reads_it_or_fails_naming_a_line(tmp_path: Path) -> None:
    """Seeded random text full of quotes, separators and line breaks: the reader either gives
    exactly the records Python's csv (strict) gives, or raises InputError naming a line."""
    rng = random.Random(7)
    alphabet = ["a", "1", ",", '"', '""', "\n", "\r\n", "\r", " ", "é", "\t"]
    refused = 0
    for case in range(200):
        text = "h1,h2\n" + "".join(rng.choices(alphabet, k=rng.randint(0, 25)))
        path = write(tmp_path, f"case{case}.csv", text)
        try:
            result = read(path, batch_rows=3)
        except InputError as error:
            message = str(error)
        else:
            message = ""
        if message:
            assert message.startswith(f"{path}, line "), (text, message)
            refused += 1
            continue
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))[1:]
        expected = {
            index + 2: record if len(record) == 2 else "reject"
            for index, record in enumerate(records)
            if record
        }
        got: dict[int, Any] = {
            line: [_as_text(row["h1"]), _as_text(row["h2"])] for line, row in result.rows.items()
        }
        got |= dict.fromkeys(result.rejects, "reject")
        assert got == expected, text
    assert 0 < refused < 200


# -------------------------------------------------------------------------------- JSONTestSuite


def _suite_docs() -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(JSON_SUITE.glob("*.json"))}


def _one_line(doc: bytes) -> bytes | None:
    """The document as one JSONL line, or None if it holds a line break of its own."""
    doc = doc.removesuffix(b"\n")
    return None if b"\n" in doc or b"\r" in doc else doc


def _is_utf8(doc: bytes) -> bool:
    try:
        doc.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_json_suite_documents_as_jsonl_lines(tmp_path: Path) -> None:
    """Every y_ object is a row, every other y_ document and every n_ document a reject, and the
    good line after each one survives with its own line number."""
    need(JSON_SUITE)
    docs = {
        name: line
        for name, doc in _suite_docs().items()
        if name[0] in "yn" and (line := _one_line(doc)) is not None and _is_utf8(line)
    }
    assert len(docs) > 250
    lines = [b'{"good":0}']
    where: dict[str, int] = {}
    for index, (name, doc) in enumerate(docs.items(), start=1):
        where[name] = len(lines) + 1
        lines += [doc, b'{"good":%d}' % index]
    result = read(write(tmp_path, "suite.jsonl", b"\n".join(lines) + b"\n"), batch_rows=50)
    rows, rejects = result.rows, result.rejects
    for index in range(len(docs) + 1):
        assert rows[2 * index + 1]["good"] == index
    blank = {name for name, doc in docs.items() if not doc.strip(b" \t\r\n")}
    # Valid JSON that the importer refuses on purpose: a key twice, a NUL character in a key.
    refused = {
        "y_object_duplicated_key.json": "json",
        "y_object_duplicated_key_and_value.json": "json",
        "y_object_escaped_null_in_key.json": "nul",
    }
    # A document of whitespace (or nothing) is a blank line, which JSONL skips.
    assert blank == {"n_single_space.json", "n_structure_no_data.json"}
    assert result.blank_lines == len(blank)
    for name, doc in docs.items():
        line = where[name]
        if name in blank:
            assert line not in rows, name
            assert line not in rejects, name
        elif name.startswith("n_"):
            assert rejects[line][RULE] in ("json", "json_object"), name
            assert rejects[line][RAW] == doc.decode(), name
        elif name in refused:
            assert rejects[line][RULE] == refused[name], name
        elif isinstance(value := json.loads(doc), dict):
            row = rows[line]
            assert {key: row[key] for key in value} == value, name
            assert all(row[key] is None for key in row.keys() - value.keys() - {"good"}), name
        else:
            assert rejects[line][RULE] == "json_object", name


def _alone(path: Path) -> bool:
    """Read on its own: every i_ document, and the others the combined file cannot hold."""
    doc = path.read_bytes()
    return path.name.startswith("i_") or _one_line(doc) is None or not _is_utf8(doc)


@pytest.mark.parametrize(
    "path",
    [p for p in corpus_files(JSON_SUITE, "[yni]_*.json") if not p.values[0] or _alone(p.values[0])],
)
def test_json_suite_document_with_line_breaks_or_bad_bytes(tmp_path: Path, path: Path) -> None:
    """Each document on its own between two good lines: a line break splits it into lines that
    are each read, rejected or skipped; bytes that are not UTF-8 fail the file at their place;
    an i_ document never crashes the reader."""
    doc = path.read_bytes()
    body = doc.removesuffix(b"\n")
    data = b'{"good":1}\n' + body + b'\n{"good":2}\n'
    target = write(tmp_path, "doc.jsonl", data)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(body[: exc.start].decode("utf-8")) + 1
        line = 2 + body.count(b"\n", 0, exc.start)
        bad = body[exc.start : exc.end].hex(" ")
        assert str(input_error(target)) == (
            f"{target}, line {line}, column {column}: bytes {bad} are not UTF-8"
        )
        return
    result = read(target, batch_rows=2)
    last = 3 + body.count(b"\n")
    assert (result.rows[1], result.rows[last]) == ({"good": 1}, {"good": 2})
    inner = range(2, last)
    assert set(result.rows) | set(result.rejects) <= {1, last, *inner}
    if path.name.startswith("n_"):
        assert set(result.rejects) & set(inner)


@pytest.mark.parametrize(
    "name",
    [
        "i_string_UTF-16LE_with_BOM.json",
        "i_string_utf16BE_no_BOM.json",
        "i_string_utf16LE_no_BOM.json",
    ],
)
def test_json_suite_utf16_documents_are_utf16_files(tmp_path: Path, name: str) -> None:
    doc = need(JSON_SUITE / name).read_bytes()
    path = write(tmp_path, "doc.jsonl", doc)
    assert str(input_error(path)) == f"{path}: the file is UTF-16, not UTF-8"


@pytest.mark.parametrize(
    ("name", "column", "bad"),
    [
        pytest.param("n_array_invalid_utf8.json", 2, "ff", id="invalid"),
        pytest.param("i_string_UTF-8_invalid_sequence.json", 5, "fa", id="after-two-chars"),
        pytest.param("n_structure_incomplete_UTF8_BOM.json", 1, "ef bb", id="half-a-bom"),
        pytest.param("i_string_UTF8_surrogate_U+D800.json", 3, "ed", id="encoded-surrogate"),
        pytest.param("i_string_overlong_sequence_2_bytes.json", 3, "c0", id="overlong"),
    ],
)
def test_json_suite_bad_bytes_name_line_and_column(
    tmp_path: Path, name: str, column: int, bad: str
) -> None:
    doc = need(JSON_SUITE / name).read_bytes()
    path = write(tmp_path, "doc.jsonl", b'{"good":1}\n' + doc + b"\n")
    assert str(input_error(path)) == f"{path}, line 2, column {column}: bytes {bad} are not UTF-8"


# -------------------------------------------------------------------------------- csv-spectrum


@pytest.mark.parametrize("path", corpus_files(SPECTRUM / "csvs", "*.csv"))
def test_csv_spectrum(path: Path) -> None:
    expected = json.loads((SPECTRUM / "json" / path.with_suffix(".json").name).read_text())
    if path.name == "location_coordinates.csv":
        # Its expectation is known to be wrong: one object instead of a list of one, and another
        # phone number than the CSV's. (Its bare quotes, 37°36'37.8"N, come in a pair, so both
        # parsers read them as text.)
        assert expected["Contact Phone Number"] == "1234567890"
        expected = [expected | {"Contact Phone Number": "2095257564"}]
    result = read(path)
    assert [
        {key: _as_text(value) for key, value in row.items()} for row in result.rows.values()
    ] == expected
    assert (result.rejects, result.blank_lines) == ({}, 0)


# ------------------------------------------------------------------------------------- blns


@pytest.fixture(scope="module")
def naughty() -> list[str]:
    strings = json.loads(need(BLNS).read_text(encoding="utf-8"))
    assert len(strings) > 400
    return strings


@pytest.mark.parametrize(
    "quoting",
    [
        pytest.param(csv.QUOTE_MINIMAL, id="quote-minimal"),
        pytest.param(csv.QUOTE_ALL, id="quote-all"),
    ],
)
@pytest.mark.parametrize("separator", [",", "\t"])
def test_naughty_strings_survive_csv(
    tmp_path: Path, naughty: list[str], quoting: int, separator: str
) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=separator, quoting=quoting, lineterminator="\r\n")
    writer.writerow(["id", "value"])
    writer.writerows(enumerate(naughty))
    name = "naughty.csv" if separator == "," else "naughty.tsv"
    result = read_bytes(tmp_path, name, buffer.getvalue().encode("utf-8"))
    assert (result.rejects, result.blank_lines) == ({}, 0)
    got = [row["value"] for row in result.rows.values()]
    # An unquoted empty cell is null; quoted, it is the empty string.
    expected = [
        None if value == "" and quoting == csv.QUOTE_MINIMAL else value for value in naughty
    ]
    assert got == expected
    assert [row["id"] for row in result.rows.values()] == list(range(len(naughty)))


@pytest.mark.parametrize("ensure_ascii", [False, True], ids=["utf8", "ascii-escapes"])
def test_naughty_strings_survive_jsonl(
    tmp_path: Path, naughty: list[str], ensure_ascii: bool
) -> None:
    lines = [
        json.dumps({"id": i, "value": value, value: i}, ensure_ascii=ensure_ascii)
        for i, value in enumerate(naughty)
    ]
    path = write(tmp_path, "naughty.jsonl", "\n".join(lines).encode("utf-8"))
    result = read(path, batch_rows=100)
    assert (result.rejects, result.blank_lines) == ({}, 0)
    rows = result.rows
    assert [row["value"] for row in rows.values()] == naughty
    # Each string is also a key: it names a column and keeps its own value.
    for line, row in rows.items():
        assert row[naughty[line - 1]] == line - 1
    assert [cell["value"].encode() for cell in result.cells] == [
        json.dumps(value, ensure_ascii=False).encode() for value in naughty
    ]


def test_a_field_longer_than_pythons_csv_limit_is_read(tmp_path: Path) -> None:
    long = "x" * 200_000
    path = write(tmp_path, "long.csv", f'a,b\n1,"{long}"\n2,short\n')
    [batch] = iter_batches(open_input(path))
    assert batch.frame["b"].to_list() == [f'"{long}"', '"short"']


def test_a_mongo_version_key_is_an_ordinary_column(tmp_path: Path) -> None:
    path = write(tmp_path, "in.csv", "_id,__v\n1,0\n")
    [batch] = iter_batches(open_input(path))
    assert batch.frame["__v"].to_list() == ["0"]


# ------------------------------------------------------------------ a file that changes under us


def read_until_error(source: InputFile) -> tuple[list[Batch], InputError]:
    """The batches of 5 rows read before an InputError, and the error (the test fails if none)."""
    batches: list[Batch] = []
    try:
        for batch in iter_batches(source, batch_rows=5):
            batches.append(batch)
    except InputError as exc:
        return batches, exc
    pytest.fail("no InputError")


def _fixed_width(name: str, rows: int) -> tuple[bytes, int, int]:
    """A file of equal-length rows: its bytes, the header's length and one row's length."""
    if name.endswith(".csv"):
        header, row = b"id,name\n", "{0:04d},n{0:04d}\n"
    else:
        header, row = b"", '{{"id":"{0:04d}"}}\n'
    data = header + "".join(row.format(i) for i in range(rows)).encode()
    return data, len(header), len(row.format(0))


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_a_file_rewritten_in_place_stops_before_the_changed_block(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same length, new content: rows must never come from bytes the fingerprint did not hash,
    or they are sent and recorded as the original's and the original rows never arrive."""
    monkeypatch.setattr("importer.inputs.common.CHUNK_BYTES", 256)
    monkeypatch.setattr("importer.inputs.common.CHUNK_RECORDS", 5)
    data, header, row = _fixed_width(name, 200)
    path = write(tmp_path, name, data)
    source = open_input(path)
    changed_block = 3
    at = changed_block * 256 + 100
    path.write_bytes(data[:at] + data[at:].replace(b"0", b"9"))
    assert path.stat().st_size == len(data)
    batches, error = read_until_error(source)
    assert str(error) == (
        f"{path}: the file changed while it was being read (bytes 768 to 1,024 are not what "
        "they were when it was opened); nothing from the changed part was sent"
    )
    assert error.hint == (
        "restore it and run again, or run again once it is final: the new content is a new input"
    )
    lines = [line for batch in batches for line in batch.frame[LINE].to_list()]
    assert lines, "the blocks before the change are read"
    first_line = 2 if name.endswith(".csv") else 1
    # Where the last row handed out ends in the file: before the changed block starts.
    assert header + (max(lines) - first_line + 1) * row <= changed_block * 256
    assert lines == list(range(first_line, max(lines) + 1))


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
@pytest.mark.parametrize("change", ["shorter", "longer"])
@pytest.mark.parametrize("block", [256, 0], ids=["mid-block", "at-a-block-end"])
def test_a_file_whose_length_changes_during_the_read(
    tmp_path: Path, name: str, change: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Said as a change, not as broken quoting, and without the rows of the new part; a file
    that grows by a whole block is caught too (block 0: the file ends where a block does)."""
    data, _, row = _fixed_width(name, 200)
    monkeypatch.setattr("importer.inputs.common.CHUNK_BYTES", block or len(data) // 8)
    monkeypatch.setattr("importer.inputs.common.CHUNK_RECORDS", 5)
    path = write(tmp_path, name, data)
    source = open_input(path)
    changed = data[: -2 * row] if change == "shorter" else data + data[-row:]
    path.write_bytes(changed)
    batches, error = read_until_error(source)
    assert str(error) == (
        f"{path}: the file changed while it was being read (it had {len(data):,} bytes when it "
        f"was opened and has {len(changed):,} now); nothing from the changed part was sent"
    )
    assert sum(batch.frame.height for batch in batches) < 200


def test_a_file_changed_during_a_run_sends_nothing_of_it_and_the_original_arrives_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: rewritten after it was fingerprinted, the file stops the run with nothing of
    the new content sent or recorded; restored, every original row is sent by the next run."""
    original = (
        "user_id,email,event,occurred_at\n"
        "u1,a@example.com,Login,2023-05-30T10:00:00Z\n"
        "u2,b@example.com,Login,2023-05-30T10:00:00Z\n"
    )
    path = write(tmp_path, "events.csv", original)
    opened = engine.open_inputs

    def open_then_rewrite(options: Any, **known: Any) -> Any:
        sources = opened(options, **known)
        path.write_text(original.replace("u1,", "u7,").replace("u2,", "u8,"))
        return sources

    args = ["run", str(path), "--schema", TRACK_SCHEMA, "--endpoint", "embedded"]
    args += ["--state", str(tmp_path / "state"), "--quiet"]
    monkeypatch.setattr(engine, "open_inputs", open_then_rewrite)
    code, _, err = invoke(*args)
    assert code == 1
    assert err.startswith(f"Error: {path}: the file changed while it was being read (bytes 0 to")
    assert "Hint: restore it and run again, or run again once it is final" in err
    monkeypatch.setattr(engine, "open_inputs", opened)
    path.write_text(original)
    code, out, err = invoke(*args[:-1])
    assert code == 0, err
    assert re.search(r"delivered +2\n", out)
    assert re.search(r"skipped \(done before\) +0\n", out)


# ----------------------------------------------------------------- pipes, blanks, compression


PIPE_MESSAGE = (
    "is a pipe (a FIFO, or a <(...) process substitution), not a regular file; the importer "
    "reads an input more than once (first to fingerprint it, so that a run can resume), which "
    "only a file allows"
)


@pytest.mark.parametrize("name", ["events.csv", "in.jsonl", "63"])
def test_a_named_pipe_is_refused_without_opening_it(tmp_path: Path, name: str) -> None:
    """Read twice, a pipe blocks forever; said before the ending is (/dev/fd/63 has none)."""
    path = tmp_path / name
    os.mkfifo(path)  # no writer: opening it would block, so the test would hang
    error = input_error(path)
    assert str(error) == f"{path}: {PIPE_MESSAGE}"
    assert error.hint == "save it to a file first (e.g. `... > events.csv`) and import that file"


def test_a_named_pipe_on_the_command_line_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    os.mkfifo(path)
    code, _, err = invoke("validate", str(path), "--schema", TRACK_SCHEMA)
    assert code == 1
    assert err.startswith(f"Error: {path}: {PIPE_MESSAGE}\nHint: save it to a file first")


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl"])
@pytest.mark.parametrize(
    "data",
    [
        pytest.param("\n\n\n", id="newlines"),
        pytest.param("  \n", id="spaces"),
        pytest.param("\r\n \t\r\n", id="crlf-and-tab"),
        pytest.param(BOM + b"\n \n", id="bom"),
    ],
)
def test_a_file_of_only_blank_lines_is_empty(tmp_path: Path, name: str, data: str | bytes) -> None:
    result = read_bytes(tmp_path, name, data)
    assert result.source.blank
    assert (result.batches, result.source.columns) == ([], ())


def test_a_blank_start_longer_than_a_block_is_not_a_blank_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("importer.inputs.common.CHUNK_BYTES", 64)
    result = read_bytes(tmp_path, "in.jsonl", "\n" * 300 + '{"a":1}\n')
    assert not result.source.blank
    assert (result.rows, result.blank_lines) == ({301: {"a": 1}}, 300)


@pytest.mark.parametrize(
    ("name", "data", "warning"),
    [
        pytest.param("in.csv", "\n\n\n", "is only blank lines", id="csv"),
        pytest.param("in.csv", "  \n", "is only blank lines", id="csv-spaces"),
        pytest.param("in.tsv", "\r\n \t\r\n", "is only blank lines", id="tsv"),
        pytest.param("in.jsonl", "\n \n", "is only blank lines", id="jsonl"),
        pytest.param("in.csv", "  ", "is empty", id="spaces-without-a-line-end"),
    ],
)
def test_a_blank_input_exits_0_with_a_warning(
    tmp_path: Path, name: str, data: str, warning: str
) -> None:
    """A night without events may leave a file of blank lines: nothing to send, not an error."""
    path = write(tmp_path, name, data)
    code, out, err = invoke("validate", str(path), "--schema", TRACK_SCHEMA)
    assert (code, err) == (0, "")
    assert out.endswith(f"\nwarning: {path} {warning}: nothing to send\n")


def _zip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("events.csv", data)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
@pytest.mark.parametrize(
    ("compress", "format_name", "command"),
    [
        # A gzip or zstd file is read; compressed twice, its content is compressed.
        pytest.param(
            lambda data: gzip.compress(gzip.compress(data)), "gzip", "gzip -dc", id="gzip-twice"
        ),
        pytest.param(bz2.compress, "bzip2", "bzip2 -dc", id="bzip2"),
        pytest.param(lambda data: bz2.compress(b""), "bzip2", "bzip2 -dc", id="bzip2-empty"),
        pytest.param(lzma.compress, "xz", "xz -dc", id="xz"),
        pytest.param(_zip, "zip", "unzip -p", id="zip"),
    ],
)
def test_a_compressed_file_says_so(
    tmp_path: Path, name: str, compress: Any, format_name: str, command: str
) -> None:
    path = write(tmp_path, name, compress(b'a,b\n1,2\n{"a":1}\n'))
    error = input_error(path)
    assert str(error) == f"{path}: the file is compressed ({format_name}), not text"
    assert error.hint == (
        f"decompress it first, e.g. {command} {path} > plain-{name} "
        "(gzip and zstd files are read as they are)"
    )


def test_a_header_that_starts_like_bzip2_is_text(tmp_path: Path) -> None:
    assert read_bytes(tmp_path, "in.csv", "BZh9,x\n1,2\n").rows == {2: {"BZh9": 1, "x": 2}}


@pytest.mark.parametrize("name", ["in.csv", "in.csv.gz", "in.csv.zst"])
@pytest.mark.parametrize(
    "compress",
    [
        pytest.param(gzip.compress, id="gzip"),
        pytest.param(lambda data: zstandard.ZstdCompressor().compress(data), id="zstd"),
    ],
)
def test_gzip_and_zstd_are_read_by_their_magic_whatever_the_name(
    tmp_path: Path, name: str, compress: Any
) -> None:
    path = write(tmp_path, name, compress(b"a,b\n1,x\n"))
    plain = read_bytes(tmp_path, "plain.csv", "a,b\n1,x\n")
    found = read(path)
    assert found.rows == plain.rows == {2: {"a": 1, "b": "x"}}


# ------------------------------------------------------------------- NUL and very long numbers


@pytest.mark.parametrize(
    ("name", "data", "column", "error"),
    [
        pytest.param("in.csv", b"a,b\n1,x\x00y\n", "b", "column b holds", id="csv"),
        pytest.param("in.tsv", b"a\tb\n\x00\t1\n", "a", "column a holds", id="tsv-first-column"),
        pytest.param("in.jsonl", b'{"a":"x\\u0000"}\n', "a", "column a holds", id="jsonl"),
        pytest.param(
            "in.jsonl", b'{"a":{"b":["\\u0000"]}}\n', "a", "column a holds", id="jsonl-nested"
        ),
        pytest.param(
            "in.jsonl", b'{"a":"\\\\\\u0000"}\n', "a", "column a holds", id="after-a-backslash"
        ),
        pytest.param("in.jsonl", b'{"k\\u0000":1}\n', "k\\0", "key k\\0 holds", id="in-a-key"),
        pytest.param(
            "in.jsonl", b'{"a":{"\\u0000":1}}\n', "a", "column a holds", id="in-a-nested-key"
        ),
    ],
)
def test_a_nul_character_is_a_reject(
    tmp_path: Path, name: str, data: bytes, column: str, error: str
) -> None:
    """A NUL passes JSON and HTTP, then cuts the text short in whatever stores it."""
    good = {"in.csv": b"1,ok\n", "in.tsv": b"1\tok\n", "in.jsonl": b'{"a":"ok"}\n'}[name]
    result = read_bytes(tmp_path, name, data + good)
    rejected_line = 1 if name == "in.jsonl" else 2
    assert list(result.rows) == [rejected_line + 1]
    [(line, reject)] = result.rejects.items()
    assert line == rejected_line
    assert (reject[RULE], reject[COLUMN], reject[ERROR]) == (
        "nul",
        column,
        f"{error} a NUL character (\\0)",
    )


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("in.csv", b"a\n\\u0000\n", id="csv-text-that-looks-like-the-escape"),
        pytest.param("in.jsonl", b'{"a":"\\\\u0000"}\n', id="jsonl-escaped-backslash"),
        pytest.param("in.jsonl", b'{"a":"\\\\\\\\u0000"}\n', id="jsonl-two-escaped-backslashes"),
    ],
)
def test_text_that_only_looks_like_a_nul_is_kept(tmp_path: Path, name: str, data: bytes) -> None:
    result = read_bytes(tmp_path, name, data)
    assert result.rejects == {}
    [row] = result.rows.values()
    assert "\x00" not in row["a"]


def test_a_nul_reject_keeps_the_rows_columns_next_to_a_bad_field_count(tmp_path: Path) -> None:
    result = read_bytes(tmp_path, "in.csv", "a,b\n1\n2,x\x00\n3,ok\n")
    assert result.rows == {4: {"a": 3, "b": "ok"}}
    assert {line: (r[RULE], r["a"], r["b"]) for line, r in result.rejects.items()} == {
        2: ("csv_fields", "1", None),
        3: ("nul", "2", '"x\\u0000"'),
    }


def test_a_number_too_long_for_python_says_so(tmp_path: Path) -> None:
    """Not Python's 'Exceeds the limit (4300 digits) ... sys.set_int_max_str_digits'."""
    result = read_bytes(tmp_path, "in.jsonl", '{"a":' + "1" * 5000 + '}\n{"a":1}\n')
    assert result.rows == {2: {"a": 1}}
    assert result.rejects[1][RULE] == "json"
    assert result.rejects[1][ERROR] == "a number is too long: 5000 digits, the limit is 4300"


@pytest.mark.parametrize(
    ("line", "rule", "error"),
    [
        pytest.param(
            '{"user_id":"u1","user_id":"u2"}', "json", 'key "user_id" appears twice in one object'
        ),
        pytest.param('{"user_id":"u\\u0000"}', "nul", "column user_id holds a NUL character (\\0)"),
        pytest.param('{"user_id":' + "7" * 5000 + "}", "json", "a number is too long: 5000 "),
    ],
)
def test_bad_jsonl_rows_on_the_command_line(
    tmp_path: Path, line: str, rule: str, error: str
) -> None:
    row = '"email":"a@example.com","event":"Login","occurred_at":"2023-05-30T10:00:00Z"'
    path = write(tmp_path, "in.jsonl", line.replace("{", "{" + row + ",", 1) + "\n")
    code, out, err = invoke("validate", str(path), "--schema", TRACK_SCHEMA)
    assert code == 3, err
    assert re.search(
        rf"\n  {rule} +1\n      {re.escape(str(path))}, line 1: {re.escape(error)}", out
    )


def test_a_nul_beyond_the_first_block_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The byte pass notes a NUL byte in any block, not just the first."""
    monkeypatch.setattr("importer.inputs.common.CHUNK_BYTES", 64)
    rows = [f"{i},ok" for i in range(50)] + ["50,x\x00"]
    result = read_bytes(tmp_path, "in.csv", "a,b\n" + "\n".join(rows) + "\n")
    assert {line: r[RULE] for line, r in result.rejects.items()} == {52: "nul"}
    assert len(result.rows) == 50


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "quoted"])
@pytest.mark.parametrize(
    ("type_name", "cells"),
    [
        pytest.param("integer", ["42", "-7", "", "9007199254740993"], id="integer"),
        pytest.param("number", ["1.5", "2", ""], id="number"),
        pytest.param("boolean", ["true", "false", ""], id="boolean"),
        pytest.param("string", ["12", "-3", ""], id="string"),
    ],
)
def test_a_column_the_mapping_pins_is_not_profiled_and_validates_the_same(
    tmp_path: Path, type_name: str, cells: list[str], plain: bool
) -> None:
    """[types] fixes the column's type, so the profile skips it (read as text) and the values
    sent are what the profiled read gives."""
    from pipeline_helpers import NOW, make_mapping

    from importer.checks.validate import FileState, validate_frame

    event = "E" if plain else '"E"'  # a quote anywhere: the file goes through Python's csv
    rows = [f"u{index},{event},2024-01-01T00:00:00Z,{cell}" for index, cell in enumerate(cells)]
    path = tmp_path / "in.csv"
    path.write_text("user_id,event,t,n\n" + "\n".join(rows) + "\n")
    fields = {
        "identity.id": "user_id",
        "event_name": "event",
        "extras.created_at": "t",
        "data": "*",
    }
    mapping = make_mapping(fields=fields, types={"n": type_name})
    profiled, pinned = open_input(path), open_input(path, pinned={"n"})
    assert profiled.plain is plain
    assert pinned.column_kinds["n"] == "string"
    assert profiled.column_kinds["n"] == (type_name if type_name != "string" else "integer")
    assert pinned.column_kinds["user_id"] == profiled.column_kinds["user_id"]
    sent = [
        validate_frame(batch.frame, mapping, state=FileState(), now=NOW).valid
        for source in (profiled, pinned)
        for batch in iter_batches(source)
    ]
    assert sent[0].equals(sent[1])


def test_a_run_opens_its_inputs_with_the_mappings_pinned_columns(tmp_path: Path) -> None:
    from pipeline_helpers import make_mapping

    from importer.pipeline.run import RunOptions, open_inputs

    path = tmp_path / "in.csv"
    path.write_text("user_id,event,t,n\nu1,E,2024-01-01T00:00:00Z,42\n")
    fields = {"identity.id": "user_id", "event_name": "event", "extras.created_at": "t"}
    mapping = make_mapping(fields=fields, types={"n": "integer"})
    (source,) = open_inputs(RunOptions(inputs=(path,), mapping=mapping))
    assert source.column_kinds["n"] == "string"
    assert open_input(path).column_kinds["n"] == "integer"
