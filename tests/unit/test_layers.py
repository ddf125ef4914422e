"""The packages' layering, read from the source (README "Layout"): a core module imports
only the core; a role package (producers, processors, sinks) imports the core and itself;
only the composition root imports the roles. Imports inside functions count too: one
there still ties the packages together, only later."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "newsflow"
ROLES = ("producers", "processors", "sinks")
# The `newsflow` command (each area's subcommands, wired to what they need of another)
# and the supervisor of `newsflow run` (each role's process, the seeds replayed at start).
COMPOSITION_ROOT = ("newsflow.cli", "newsflow.service")


def imported_packages(path: Path, package: str) -> set[tuple[int, str]]:
    """(line, top-level package) of every import of ours in ``path``, at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package if node.level else node.module or ""]
        else:
            continue
        found.update((node.lineno, name.split(".")[0]) for name in names
                     if name.split(".")[0] in (CORE, *ROLES))
    return found


def allowed(module: str, package: str, imported: str) -> bool:
    if module in COMPOSITION_ROOT or imported == CORE:
        return True
    return imported == package  # a role imports itself; the core, only the core


def layering_breaches() -> list[str]:
    breaches = []
    for package in (CORE, *ROLES):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for line, imported in sorted(imported_packages(path, package)):
                if not allowed(module, package, imported):
                    breaches.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return breaches


def test_packages_import_only_their_own_layer_and_the_core() -> None:
    breaches = layering_breaches()
    assert not breaches, "a role or the core reaches past its layer:\n" + "\n".join(breaches)


def test_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from sinks.store import open_store\n"
                      "    import processors.app\n    from . import text\n")
    assert imported_packages(module, "producers") == {
        (4, "sinks"), (5, "processors"), (6, "producers")}
