"""The presets: a mapping for every action, shipped inside the package, found by name.

`--mapping NAME` (or `mapping="NAME"` from Python) names a preset: a file that
exists wins, and only a bare name (no `/`, no `.toml`) is looked up here, so a path the user
meant is never silently replaced by a preset. The files are importer/presets/, a copy of the
repository's schemas/ that tests/test_presets.py keeps identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from importer.errors import MappingError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
SUFFIX = ".toml"
REPORT_SCHEMA = "report.schema.json"


@dataclass(frozen=True, slots=True)
class Preset:
    """One preset: its name (its file's, without .toml), its file, and the first sentence of
    its comment."""

    name: str
    path: Path
    summary: str

    @property
    def json_schema(self) -> Path:
        """The JSON Schema of the payloads this preset's action builds."""
        return self.path.with_name(f"{self.name}.schema.json")


def preset_names() -> list[str]:
    """Every preset's name, sorted."""
    return sorted(path.name.removesuffix(SUFFIX) for path in PRESETS_DIR.glob(f"*{SUFFIX}"))


def presets() -> list[Preset]:
    """Every preset, sorted by name."""
    return [get_preset(name) for name in preset_names()]


def get_preset(name: str) -> Preset:
    """The preset called `name`; MappingError naming the presets there are when there is none."""
    path = PRESETS_DIR / f"{name}{SUFFIX}"
    if not is_preset_name(name) or not path.is_file():
        raise MappingError(
            f"no preset named {name!r}",
            hint=f"presets: {', '.join(preset_names())} (`importer presets` describes them)",
        )
    return Preset(name=name, path=path, summary=_summary(path.read_text(encoding="utf-8")))


def is_preset_name(text: str) -> bool:
    """Whether `text` can only be a preset's name: no folder, no .toml, not empty."""
    return bool(text) and "/" not in text and "\\" not in text and not text.endswith(SUFFIX)


def resolve_mapping(path: Path | str) -> Path:
    """The mapping file `path` stands for: itself when it exists or looks like a path, else the
    preset of that name (MappingError when there is none, listing them)."""
    given = Path(path)
    if given.exists() or not is_preset_name(str(path)):
        return given
    try:
        return get_preset(str(path)).path
    except MappingError as exc:
        raise MappingError(
            f"mapping {str(path)!r} is neither a file nor a preset", hint=exc.hint
        ) from None


def report_schema() -> Path:
    """The JSON Schema of the report that `--report` writes."""
    return PRESETS_DIR / REPORT_SCHEMA


def _summary(text: str) -> str:
    """The first sentence of the file's leading comment block."""
    lines: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    words = " ".join(lines)
    for end in (", e.g.", ". "):
        words = words.split(end, 1)[0]
    return words.removesuffix(".").strip()
