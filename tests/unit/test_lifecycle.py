"""The lifecycle core: statuses, groups and the classification of every status pair."""

from __future__ import annotations

import itertools

import pytest

from tracker.lifecycle import BLOCKED, FINAL, MAIN_PATH, Kind, Status, classify, is_final, is_known

STATUSES = list(Status)


def expected_kind(source: Status, target: Status) -> tuple[Kind, tuple[Status, ...]]:
    """An independent statement of the rules, written as a table walk."""
    if source in FINAL:
        return Kind.LEAVES_FINAL, ()
    if target is Status.CANCELLED:
        return Kind.CANCEL, ()
    if target in {Status.ACTIVATED, Status.PRE_INSTALLED}:
        if source in MAIN_PATH and target in MAIN_PATH:
            return Kind.COMPLETE, MAIN_PATH[MAIN_PATH.index(source) + 1 : MAIN_PATH.index(target)]
        return Kind.COMPLETE, ()
    if target in BLOCKED:
        return Kind.BLOCK, ()
    if source in BLOCKED:
        return Kind.UNBLOCK, ()
    i, j = MAIN_PATH.index(source), MAIN_PATH.index(target)
    if j < i:
        return Kind.REGRESS, ()
    if j == i + 1:
        return Kind.ADVANCE, ()
    return Kind.SKIP_AHEAD, MAIN_PATH[i + 1 : j]


class TestStatuses:
    """The 14 documented statuses and their groups."""

    def test_there_are_fourteen_documented_statuses(self) -> None:
        """There are fourteen statuses, each with its own documentation."""
        assert len(STATUSES) == 14
        assert all(member.__doc__ for member in STATUSES)

    def test_groups(self) -> None:
        """The final and blocked groups and the main path hold the documented statuses."""
        assert {s.value for s in FINAL} == {"activated", "cancelled", "pre_installed"}
        assert {s.value for s in BLOCKED} == {"blocked", "blocked_wim"}
        assert MAIN_PATH[0] is Status.INTENDED
        assert MAIN_PATH[-1] is Status.ACTIVATED
        assert len(MAIN_PATH) == 10

    def test_unknown_values_are_not_known_nor_final(self) -> None:
        """An unknown value is neither known nor final."""
        assert not is_known("installation_cancelled")
        assert not is_final("installation_cancelled")
        assert is_known("blocked_wim")
        assert is_final("pre_installed")


class TestClassifyAllPairs:
    """Every one of the 14x14 status pairs is classified as the rules say."""

    @pytest.mark.parametrize(
        ("source", "target"),
        [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b],
        ids=lambda s: s.value,
    )
    def test_pair(self, source: Status, target: Status) -> None:
        """A pair of different statuses gets the kind and skipped steps the rules give."""
        kind, skipped = expected_kind(source, target)
        result = classify(source.value, target.value)
        assert result.kind is kind
        assert result.skipped == skipped

    @pytest.mark.parametrize("status", STATUSES, ids=lambda s: s.value)
    def test_same_status_is_no_change(self, status: Status) -> None:
        """A status paired with itself is refused as no change."""
        with pytest.raises(ValueError, match="not a status change"):
            classify(status.value, status.value)


class TestClassifyExamples:
    """Named examples that the support team relies on."""

    def test_examples(self) -> None:
        """The named support examples classify as advance, skip, regress, block and so on."""
        assert classify("ordered", "checked").kind is Kind.ADVANCE
        skip = classify("checked", "installation_scheduled")
        assert skip.kind is Kind.SKIP_AHEAD
        assert skip.skipped == (Status.INSTALLATION_PLANNING,)
        assert classify("installation_scheduled", "installation_planning").kind is Kind.REGRESS
        assert classify("ordered", "blocked").kind is Kind.BLOCK
        assert classify("blocked", "blocked_wim").kind is Kind.BLOCK
        assert classify("blocked_wim", "installation_scheduled").kind is Kind.UNBLOCK
        assert classify("blocked", "cancelled").kind is Kind.CANCEL
        assert classify("installed", "activated").kind is Kind.COMPLETE
        assert classify("ordered", "pre_installed").kind is Kind.COMPLETE
        assert classify("activated", "installed").kind is Kind.LEAVES_FINAL
        assert classify("cancelled", "waiting").kind is Kind.LEAVES_FINAL

    @pytest.mark.parametrize(
        ("source", "target"),
        [("ordered", "in_review"), ("in_review", "ordered"), ("x", "y"), ("", "waiting")],
    )
    def test_unknown_values(self, source: str, target: str) -> None:
        """A pair with an unknown status is classified as unknown."""
        assert classify(source, target).kind is Kind.UNKNOWN
