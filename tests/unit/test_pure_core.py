"""The pure core imports no I/O library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tracker

PURE = [
    "lifecycle",
    "model",
    "diff",
    "schedule",
    "errors",
    "routing",
    "sinks/render",
    "text",
    "telemetry",
    "shapes",
]
FORBIDDEN = {
    "httpx",
    "sqlalchemy",
    "structlog",
    "asyncio",
    "aiosqlite",
    "alembic",
    "apscheduler",
    "socket",
    "aiosmtplib",
    "psycopg",
    "typer",
    "rich",
    "pydantic",
    "os",
    "subprocess",
}
PACKAGE = Path(tracker.__file__).parent


def imported(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


class TestPureCore:
    """lifecycle, model, diff, schedule, routing and the renderer stay free of I/O."""

    @pytest.mark.parametrize("module", PURE)
    def test_imports_no_io_library(self, module: str) -> None:
        """A pure module imports no I/O library and no impure tracker module."""
        names = imported(module)
        roots = {name.split(".")[0] for name in names}
        assert not roots & FORBIDDEN, f"{module} imports {roots & FORBIDDEN}"
        internal = {
            n.removeprefix("tracker.").replace(".", "/") for n in names if n.startswith("tracker.")
        }
        assert internal <= set(PURE), f"{module} imports impure {internal - set(PURE)}"
