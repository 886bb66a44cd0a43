"""The rules of trust in change sweeps (pure): covering, judging, passes, losing and retrying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.trust import OVERLAP, RETRY_TRUST, SweepState, Trust, sweep_mode

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def swept_trust() -> Trust:
    """Change sweeps that covered up to T0, the last one begun at T0."""
    trust = Trust(SweepState(), trust_after=2)
    trust.swept(started=T0, newest=T0)
    return trust


def test_nothing_is_judged_before_a_sweep_covered_anything() -> None:
    """Before a change sweep read all its pages, no change counts as missed."""
    trust = Trust(SweepState())
    assert trust.judge(order_id="prdo_a", updated_at=T0 - timedelta(days=1), fingerprint=1) is None


def test_a_change_older_than_the_cover_is_missed() -> None:
    """A change with updated_at before what sweeps covered, not shown by them, is a miss."""
    missed = swept_trust().judge(order_id="prdo_a", updated_at=T0 - OVERLAP, fingerprint=7)
    assert missed is not None
    assert missed.covered == T0
    assert "prdo_a" in missed.reason


def test_a_change_after_the_cover_is_not_missed() -> None:
    """A change newer than what sweeps covered is for the next sweep to show."""
    assert swept_trust().judge(order_id="prdo_a", updated_at=T0, fingerprint=7) is None


def test_a_change_the_sweeps_showed_is_not_missed() -> None:
    """An order a change sweep showed in the same state is not missed, whatever its time."""
    trust = swept_trust()
    trust.saw("prdo_a", 7)
    assert trust.judge(order_id="prdo_a", updated_at=T0 - OVERLAP, fingerprint=7) is None
    assert trust.judge(order_id="prdo_a", updated_at=T0 - OVERLAP, fingerprint=8) is not None


def test_the_cover_follows_the_sweeps_own_clock() -> None:
    """Cover is the newest updated_at shown, or the last sweep's start less the overlap."""
    trust = Trust(SweepState())
    trust.swept(started=T0 + timedelta(hours=1), newest=T0)
    assert trust.covered() == T0 + timedelta(hours=1) - OVERLAP


def test_clean_passes_earn_trust() -> None:
    """trust_after clean passes in a row trust change sweeps; one is not enough for two."""
    trust = Trust(SweepState(), trust_after=2)
    assert trust.start_pass(T0)
    assert not trust.pass_ended(T0 + timedelta(hours=1))
    assert trust.mode == "untrusted"
    assert trust.pass_ended(T0 + timedelta(hours=2))
    assert trust.state.trusted
    assert not trust.start_pass(T0 + timedelta(hours=3))  # trusted: no pass is counted


def test_distrust_waits_a_day_before_counting_again() -> None:
    """Losing trust resets the passes and counts none for a day; it says so only once."""
    trust = Trust(SweepState(trusted=True), trust_after=1)
    assert trust.distrust("missed", now=T0)
    assert not trust.distrust("missed again", now=T0 + timedelta(minutes=1))
    assert trust.mode == "untrusted"
    assert trust.state.reason == "missed again"
    assert not trust.start_pass(T0 + RETRY_TRUST - timedelta(seconds=1))
    assert trust.start_pass(T0 + RETRY_TRUST)


def test_state_survives_being_kept() -> None:
    """The state kept as JSON reads back the same, and nothing kept reads as a fresh state."""
    state = SweepState(changes_cursor=T0, reading="abc", clean_passes=1, retry_at=T0)
    assert SweepState.loads(state.dumps()) == state
    assert SweepState.loads(None) == SweepState()


def test_the_mode_says_why() -> None:
    """Without a rule or with changes_every 0 change sweeps are off, else as the state says."""
    minute = timedelta(minutes=1)
    assert sweep_mode(rules=False, changes_every=minute, state=None)[0] == "off"
    assert sweep_mode(rules=True, changes_every=timedelta(0), state=None) == (
        "off",
        "[polling] changes_every is 0",
    )
    assert sweep_mode(rules=True, changes_every=minute, state=None) == (
        "untrusted",
        "not verified yet",
    )
