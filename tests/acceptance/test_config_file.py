"""A configuration file that cannot be read is refused at start in one line, secrets unshown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import tracker_cli

#: What the broken files below hold as a password; it must appear nowhere in the output.
SECRET = "pg-password-Q8vLr2Xw5"


class TestBrokenFileAtStart:
    """Every command refuses a file that does not decode or parse: one line, exit 2."""

    @pytest.mark.parametrize(
        ("content", "named"),
        [
            (
                f'[database]\nurl = "postgresql://app:{SECRET}@db/x"\n# caf\xe9\n'.encode(
                    "latin-1"
                ),
                "is not UTF-8: the byte at line 3, column 6 (offset 68) cannot be decoded; "
                "save the file as UTF-8",
            ),
            (
                f'[database]\nurl = "postgresql://app:{SECRET}\x00@db/x"\n'.encode(),
                "is not valid TOML: illegal character at line 2, column 46",
            ),
        ],
    )
    @pytest.mark.parametrize("command", [("run",), ("status",)])
    async def test_refused_by_position(
        self, tmp_path: Path, content: bytes, named: str, command: tuple[str, ...]
    ) -> None:
        """A file that does not decode or parse is named by position, its secrets unshown."""
        path = tmp_path / "tracker.toml"
        path.write_bytes(content)
        ran = await tracker_cli(*command, "--config", str(path))
        assert ran.code == 2
        assert ran.err == f"tracker: error: config file {path} {named}\n"
        assert SECRET not in ran.out + ran.err
