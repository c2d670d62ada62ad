"""House rules a reader relies on, checked on the source itself (docs/architecture in the README's map)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.glob("etl/*.py"), *ROOT.glob("dags/*.py")])


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read the process environment: os.environ (any use but a setdefault) or os.getenv."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                and node.attr in ("environ", "getenv", "environb"):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_settings_read_the_environment(source: Path) -> None:
    """Every setting comes from the one `Settings` object: a module reading os.environ on its own is a setting
    that --help, the README's table and the tests do not know about. (etl/__init__.py only gives numpy's OpenBLAS a
    default thread count before numpy is imported: it writes, reads nothing.)"""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    reads = _environment_reads(tree)
    if source.name == "settings.py":
        assert reads, "Settings.from_env reads the environment"
    elif source.name == "__init__.py" and source.parent.name == "etl":
        assert source.read_text(encoding="utf-8").count("os.environ") == 1
        assert "os.environ.setdefault(\"OPENBLAS_NUM_THREADS\", \"1\")" in source.read_text(encoding="utf-8")
    else:
        assert reads == [], f"{source.name} reads the environment at lines {reads}: use a Settings field"


def _imports(source: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("etl."):
            found.add(node.module.removeprefix("etl."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("etl.") for a in node.names if a.name.startswith("etl."))
    return found


def test_the_warehouse_is_read_without_the_etl_or_the_renderer() -> None:
    """Reading the warehouse has one home: no module imports the ETL (`pipeline`) or the page renderer (`render`)
    only to read it; the only importers of each are the steps that run them."""
    importers = {name: {s.stem for s in SOURCES if name in _imports(s)} for name in ("pipeline", "render")}
    assert importers["pipeline"] == {"cli", "nightly"}, importers
    assert importers["render"] == {"cli", "nightly", "render_jobs"}, importers
    assert not {"pipeline", "render", "render_jobs", "nightly"} & _imports(ROOT / "etl/warehouse.py")


def test_the_modules_import_no_circle() -> None:
    graph = {s.stem: _imports(s) for s in ROOT.glob("etl/*.py")}

    def reaches(start: str, seen: set[str]) -> set[str]:
        for name in graph.get(start, set()) - seen:
            seen.add(name)
            reaches(name, seen)
        return seen

    circles = sorted(name for name in graph if name in reaches(name, set()))
    assert circles == [], f"modules that import themselves through others: {circles}"
