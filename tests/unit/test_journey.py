"""The journey of one order, computed from its stays by hand-checked cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.field_changes import MAX_CHANGES, MAX_VALUE, Change, changes, flatten
from tracker.journey import Place, Step, Visit, journey

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def at(days: float) -> datetime:
    return T0 + days * DAY


def visits(*stays: tuple[str, float | None, float, float | None]) -> list[Visit]:
    """Stays as (status, started, seen, ended), in days after T0; ``None`` for unknown/open."""
    return [
        Visit(
            status=status,
            started_at=None if started is None else at(started),
            seen_at=at(seen),
            ended_at=None if ended is None else at(ended),
        )
        for status, started, seen, ended in stays
    ]


def by_status(steps: tuple[Step, ...]) -> dict[str, Step]:
    return {step.status: step for step in steps}


class TestMidJourneyWatch:
    """An order first seen in the middle of its journey: what came before is unknown."""

    def test_steps_before_watching_are_unknown_not_zero(self) -> None:
        """Seen first in ordered: intended and waiting are before watching, ordered's stay has
        no known start, checked runs to now, the rest are ahead."""
        found = journey(
            visits(("ordered", None, 0, 2), ("checked", 2, 2, None)), now=at(5) + 3 * HOUR
        )
        main = by_status(found.main)
        assert [step.place for step in found.main[:4]] == [
            Place.BEFORE_WATCHING,
            Place.BEFORE_WATCHING,
            Place.PASSED,
            Place.CURRENT,
        ]
        assert all(step.place is Place.AHEAD for step in found.main[4:])
        waiting, ordered, checked = main["waiting"], main["ordered"], main["checked"]
        assert waiting.unknown
        assert not waiting.timed
        assert ordered.unknown
        assert not ordered.timed
        assert ordered.visits == 1
        assert checked.known == 3 * DAY + 3 * HOUR
        assert not checked.unknown
        assert found.current == "checked"
        assert found.detours == ()
        assert [leg.length for leg in found.route] == [None, 3 * DAY + 3 * HOUR]


class TestReturns:
    """An order that came back to a status: its visits add up."""

    def test_two_stays_in_one_status_add_up(self) -> None:
        """ordered 1 day (unknown start: not counted), checked 2 days, back to ordered for half a
        day, then checked again for 1.5 days so far: checked totals 3.5 days over 2 visits."""
        found = journey(
            visits(
                ("ordered", None, 0, 1),
                ("checked", 1, 1, 3),
                ("ordered", 3, 3, 3.5),
                ("checked", 3.5, 3.5, None),
            ),
            now=at(5),
        )
        main = by_status(found.main)
        checked, ordered = main["checked"], main["ordered"]
        assert checked.visits == 2
        assert checked.known == 3.5 * DAY
        assert checked.place is Place.CURRENT
        assert ordered.visits == 2
        assert ordered.known == 12 * HOUR  # the known return only
        assert ordered.unknown
        assert ordered.timed
        assert len(found.route) == 4


class TestDetour:
    """A detour through blocked_wim is set apart from the main path, with its time."""

    def test_detour_and_skipped_step(self) -> None:
        """checked → blocked_wim (4 days) → installation_scheduled: the detour is listed with
        its time; installation_planning was skipped; blocked_wim is not on the main path."""
        found = journey(
            visits(
                ("checked", None, 0, 1),
                ("blocked_wim", 1, 1, 5),
                ("installation_scheduled", 5, 5, None),
            ),
            now=at(6),
        )
        main = by_status(found.main)
        assert main["installation_planning"].place is Place.SKIPPED
        assert main["installation_scheduled"].place is Place.CURRENT
        assert main["installation_scheduled"].known == DAY
        assert "blocked_wim" not in main
        [detour] = found.detours
        assert detour.status == "blocked_wim"
        assert detour.place is Place.PASSED
        assert detour.known == 4 * DAY
        assert [leg.detour for leg in found.route] == [False, True, False]

    def test_current_detour_and_unknown_status(self) -> None:
        """An order now cancelled after an undocumented status: both are detours, in order;
        cancelled is current, the main path's checked is passed."""
        found = journey(
            visits(("checked", 0, 0, 1), ("on_hold", 1, 1, 2), ("cancelled", 2, 2, None)),
            now=at(2) + HOUR,
        )
        assert [(s.status, s.place) for s in found.detours] == [
            ("on_hold", Place.PASSED),
            ("cancelled", Place.CURRENT),
        ]
        assert found.detours[1].known == HOUR
        assert by_status(found.main)["checked"].known == DAY
        assert found.current == "cancelled"

    def test_no_stays(self) -> None:
        """An order never polled has every step ahead and no current status."""
        found = journey([], now=T0)
        assert found.current is None
        assert {step.place for step in found.main} == {Place.AHEAD}


class TestFieldChanges:
    """Snapshots compared field by field, nested fields by dotted path, long values clipped."""

    def test_added_removed_changed(self) -> None:
        """A nested change, an added and a removed field are found by dotted path, sorted."""
        old = {"status": "ordered", "address": {"city": "Köln", "zip": "50667"}, "note": "x"}
        new = {"status": "checked", "address": {"city": "Bonn", "zip": "50667"}, "updated_at": 1}
        found = changes(old, new)
        assert [(f.path.text, f.change) for f in found.fields] == [
            ("address.city", Change.CHANGED),
            ("note", Change.REMOVED),
            ("status", Change.CHANGED),
            ("updated_at", Change.ADDED),
        ]
        city = found.fields[0]
        assert city.old is not None
        assert city.old.text == '"Köln"'
        assert city.new is not None
        assert city.new.text == '"Bonn"'
        assert found.fields[1].new is None
        assert found.fields[3].old is None

    def test_lists_and_types(self) -> None:
        """List items get their index as path; 1 and 1.0 and true are different values."""
        assert flatten({"m": [{"s": 1}, {}]}) == {"m.0.s": 1, "m.1": {}}
        found = changes({"a": 1, "b": None}, {"a": 1.0, "b": "null"})
        assert [f.path.text for f in found.fields] == ["a", "b"]

    def test_long_values_are_clipped_visibly(self) -> None:
        """A value past MAX_VALUE characters is cut there and says how long it was."""
        [change] = changes({"x": "a"}, {"x": "b" * 500}).fields
        assert change.new is not None
        assert len(change.new.text) == MAX_VALUE
        assert change.new.clipped == 502  # the quotes included

    def test_many_changes_are_bounded(self) -> None:
        """Past MAX_CHANGES fields, the rest are counted, not listed."""
        found = changes({}, {f"k{n:03d}": n for n in range(MAX_CHANGES + 7)})
        assert len(found.fields) == MAX_CHANGES
        assert found.more == 7
