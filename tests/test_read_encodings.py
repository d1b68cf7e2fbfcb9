"""Reading a file in the encoding its mapping declares (repairs.encoding): Windows-1252 and
Latin-1 read through every CSV path and JSON lines as the same text in UTF-8 reads, while the
fingerprint, offsets and line numbers stay the file's own bytes'."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import polars as pl
import pytest

from importer.errors import InputError
from importer.inputs import common
from importer.inputs.reader import iter_batches, open_input

# Every one of these is a Windows-1252 character; all but € and the quotes are Latin-1's too.
NAMES = ("Müller", "Renée", "Straße", "5 €", "“Nord”", "Zoë")


def frame_of(path: Path, **options: str) -> pl.DataFrame:
    source = open_input(path, **options)
    return pl.concat([batch.frame for batch in iter_batches(source, batch_rows=7)])


def sheet(kind: str) -> str:
    """40 rows of a `;` CSV: `plain` (no quotes: the profile splits lines), `quoted` (a quoted
    field holding the separator: Python's csv) or `lone-cr` (a CR inside a quoted field: the
    text reader that counts each line's bytes)."""
    rows = []
    for i in range(40):
        name = NAMES[i % len(NAMES)] * (1 + i % 3)
        if kind == "quoted" and i % 4 == 0:
            name = f'"{name}; jr."'
        if kind == "lone-cr" and i == 7:
            name = f'"{name}\rsecond"'
        rows.append(f"u{i};{name};{i}")
    return "user;name;n\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("kind", ["plain", "quoted", "lone-cr"])
@pytest.mark.parametrize("encoding", ["cp1252", "iso8859-1"])
def test_a_declared_encoding_reads_as_the_same_text_in_utf8_does(
    tmp_path: Path, kind: str, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small slices: the offsets the record pass notes cut the file in many places.
    monkeypatch.setattr(common, "CHUNK_RECORDS", 3)
    text = sheet(kind)
    if encoding == "iso8859-1":
        text = text.replace("€", "EUR").replace("“", "«").replace("”", "»")
    declared = tmp_path / "declared.csv"
    declared.write_bytes(text.encode(encoding))
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(text.encode("utf-8"))
    source = open_input(declared, separator=";", encoding=encoding)
    assert source.plain == (kind == "plain")
    assert source.records == 40
    expected = frame_of(utf8, separator=";")
    assert frame_of(declared, separator=";", encoding=encoding).equals(expected)
    assert expected.height == 40


def test_the_fingerprint_is_the_files_own_bytes_compressed_or_not(tmp_path: Path) -> None:
    data = sheet("plain").encode("cp1252")
    plain = tmp_path / "in.csv"
    plain.write_bytes(data)
    packed = tmp_path / "in.csv.gz"
    packed.write_bytes(gzip.compress(data))
    own = hashlib.blake2b(data, digest_size=16).hexdigest()
    for path in (plain, packed):
        source = open_input(path, separator=";", encoding="cp1252")
        assert (source.fingerprint, source.size, source.lines) == (own, len(data), 41)
    assert frame_of(packed, separator=";", encoding="cp1252")["name"][1] == '"RenéeRenée"'


def test_latin1_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        '{"user":"u1","city":"Zürich"}\n\n{"user":"u2","cité":"Nîmes"}\n'.encode("latin-1")
    )
    source = open_input(path, encoding="iso8859-1")
    assert source.columns == ("user", "city", "cité")
    frame = frame_of(path, encoding="iso8859-1")
    assert frame.select("__line", "city", "cité").rows() == [
        (1, '"Zürich"', None),
        (3, None, '"Nîmes"'),
    ]


def test_a_line_that_is_not_json_is_a_reject_with_its_decoded_text(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"user":"u1"}\n{"user": café}\n'.encode("cp1252"))
    batch = next(iter_batches(open_input(path, encoding="cp1252")))
    assert batch.rejects.select("__line", "_raw").rows() == [(2, '{"user": café}')]
    assert batch.rejects["__error"][0].endswith("(column 10)")


def test_bytes_the_declared_encoding_leaves_undefined_are_named_by_line_and_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("id;name\n1;Müller\n2;ab\x81c\n".encode("latin-1"))
    with pytest.raises(InputError) as caught:
        open_input(path, separator=";", encoding="cp1252")
    assert str(caught.value) == (
        f"{path}, line 3, column 5: bytes 81 are not cp1252, the encoding the mapping declares "
        "(repairs.encoding)"
    )
    assert caught.value.hint == (
        'if the file is ISO-8859-1, declare encoding = "latin-1" instead; if it is UTF-8, '
        "remove the `encoding` line from the mapping"
    )


def test_a_utf8_file_with_its_bom_is_not_read_as_windows_1252(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"\xef\xbb\xbfid;name\n1;M\xc3\xbcller\n")
    with pytest.raises(InputError) as caught:
        open_input(path, separator=";", encoding="cp1252")
    assert str(caught.value) == (
        f"{path}: the file starts with UTF-8's byte order mark: it is UTF-8, not cp1252 as the "
        "mapping declares (repairs.encoding)"
    )


def test_parquet_refuses_a_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"user": ["u1"], "name": ["Müller"]}).write_parquet(path)
    with pytest.raises(InputError) as caught:
        open_input(path, encoding="cp1252")
    assert str(caught.value) == (
        f"{path}: the mapping declares the encoding cp1252 (repairs.encoding), but a Parquet "
        "file's text is UTF-8 by its format; the encoding is a CSV, TSV or JSON lines file's"
    )
    assert open_input(path).columns == ("user", "name")


def test_a_utf8_file_without_a_bom_is_not_read_as_windows_1252(tmp_path: Path) -> None:
    """Every byte valid UTF-8 and some not ASCII: "Müller" would go out as "MÃ¼ller"."""
    path = tmp_path / "in.csv"
    path.write_bytes("id;name\n1;ab\n2;Müller\n".encode())
    with pytest.raises(InputError) as caught:
        open_input(path, separator=";", encoding="cp1252")
    assert str(caught.value) == (
        f"{path}, line 3, column 4: the file is UTF-8 ('ü' there would read as 'Ã¼' in cp1252, "
        "the encoding the mapping declares (repairs.encoding))"
    )
    assert caught.value.hint == "remove the `encoding` line from the mapping's [repairs] table"


def test_an_ascii_file_declared_windows_1252_reads(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"id;name\n1;ab\n")
    assert open_input(path, separator=";", encoding="cp1252").fingerprint
