"""CSV cells from outside are kept from reading as formulas (OWASP, "CSV Injection")."""

from __future__ import annotations

import csv
import io

import pytest

from tracker.export import CsvWriter, ExportRow, neutralise

#: Every first character that makes a cell get a leading single quote, with why.
QUOTED = {
    "=": "formula",
    "+": "formula",
    "-": "formula",
    "@": "formula",
    "\t": "tab (OWASP)",
    "\r": "carriage return (OWASP)",
    "\n": "line feed",
    " ": "space, which a spreadsheet may skip",
    "\x00": "NUL",
    "\x0b": "vertical tab",
    "\x1b": "escape",
    "\x7f": "delete",
    "\x85": "next line (C1)",
    "\u00a0": "no-break space",
    "\u2028": "line separator",
    "\u3000": "ideographic space",
    "\u200b": "zero-width space",
    "\u202e": "right-to-left override",
    "\ufeff": "byte order mark",
    "\uff1d": "full-width =",
    "\uff0b": "full-width +",
    "\uff0d": "full-width -",
    "\uff20": "full-width @",
}


class TestNeutralise:
    """A cell that starts like a formula, or with something invisible, gets a single quote."""

    @pytest.mark.parametrize("first", list(QUOTED), ids=list(QUOTED.values()))
    def test_quoted(self, first: str) -> None:
        """Each formula start, whitespace, control and full-width form gets a leading quote."""
        assert neutralise(first + "cmd|' /C calc'!A0") == "'" + first + "cmd|' /C calc'!A0"
        assert neutralise(first) == "'" + first

    @pytest.mark.parametrize(
        "value", ["", "ordered", "installation_planning", "ops:delivered", "'quoted", "é", "\uff11"]
    )
    def test_left_alone(self, value: str) -> None:
        """Cells that start with a letter, digit or quote are written as they are."""
        assert neutralise(value) == value

    def test_csv_cells_read_back_quoted(self) -> None:
        """CsvWriter writes every outside cell neutralised; the rest of the row as it is."""
        stream = io.StringIO()
        writer = CsvWriter(stream, terminal=False)
        rows: list[ExportRow] = [
            ("prdo_a", first + "x", "\uff1dSUM(A1)", "status", "", "t", "e", None)
            for first in QUOTED
        ]
        writer.write(rows)
        read = list(csv.reader(io.StringIO(stream.getvalue(), newline="")))[1:]
        assert [(row[1], row[2]) for row in read] == [
            ("'" + first + "x", "'\uff1dSUM(A1)") for first in QUOTED
        ]
