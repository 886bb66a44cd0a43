"""One door to the database: only ``tracker/store/`` imports SQLAlchemy."""

from __future__ import annotations

import ast
from pathlib import Path

import tracker

PACKAGE = Path(tracker.__file__).parent
#: The store and the migrations (Alembic's scripts, which read only the store's tables).
DOORS = ("store", "migrations")


def sqlalchemy_imports(path: Path) -> list[int]:
    """The lines of ``path`` that import SQLAlchemy, lazy imports included."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "sqlalchemy" or name.startswith("sqlalchemy.") for name in names):
            lines.append(node.lineno)
    return lines


class TestOneDoor:
    """No module outside the store imports SQLAlchemy: every query goes through the store."""

    def test_no_sqlalchemy_outside_the_store(self) -> None:
        """Every ``import sqlalchemy`` of the package sits under ``tracker/store/``."""
        found = {
            str(path.relative_to(PACKAGE)): lines
            for path in sorted(PACKAGE.rglob("*.py"))
            if path.relative_to(PACKAGE).parts[0] not in DOORS
            and (lines := sqlalchemy_imports(path))
        }
        assert found == {}, f"SQLAlchemy imported outside tracker/store/: {found}"

    def test_the_check_sees_an_import(self, tmp_path: Path) -> None:
        """The walk finds plain, from- and function-level imports alike."""
        module = tmp_path / "m.py"
        module.write_text(
            "import sqlalchemy as sa\nfrom sqlalchemy.exc import X\n"
            "def f():\n    import sqlalchemy.orm\n"
        )
        assert sqlalchemy_imports(module) == [1, 2, 4]
