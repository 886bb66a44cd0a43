"""How the CLI shows orders, polls and histories: rich for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tracker.model import Transition, WatchedOrder
from tracker.store import PollOutcome
from tracker.store.repo import History


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime, or ``None``."""
    return moment.isoformat() if moment is not None else None


def _short(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def state_of(order: WatchedOrder) -> str:
    """``active``, ``retired`` or ``removed``."""
    if order.active:
        return "active"
    return "retired" if order.retired_at is not None else "removed"


def watched_dict(order: WatchedOrder) -> dict[str, Any]:
    """One watched order as JSON-ready data."""
    return {
        "order_id": order.order_id,
        "status": order.status,
        "state": state_of(order),
        "source": order.source,
        "added_at": iso(order.added_at),
        "last_poll_at": iso(order.last_polled_at),
        "last_change_at": iso(order.last_change_at),
        "next_poll_at": iso(order.next_poll_at) if order.active else None,
        "consecutive_failures": order.consecutive_failures,
        "last_error_kind": order.last_error_kind,
        "last_error": order.last_error,
    }


async def watched_json(rows: AsyncIterator[WatchedOrder], stream: TextIO) -> None:
    """Write a JSON array of watched orders, one row at a time."""
    stream.write("[")
    first = True
    async for order in rows:
        stream.write(("\n  " if first else ",\n  ") + json.dumps(watched_dict(order)))
        first = False
    stream.write("\n]\n" if not first else "]\n")


async def watched_table(rows: AsyncIterator[WatchedOrder]) -> Table:
    """A table of watched orders."""
    table = Table("order", "status", "state", "last poll", "last change", "failures", "last error")
    async for order in rows:
        table.add_row(
            order.order_id,
            order.status or "-",
            state_of(order),
            _short(order.last_polled_at),
            _short(order.last_change_at),
            str(order.consecutive_failures),
            Text(f"{order.last_error_kind}: {order.last_error}" if order.last_error else ""),
        )
    return table


def outcome_line(outcome: PollOutcome, transition: Transition | None) -> Text:
    """One line saying what a poll found."""
    order_id = outcome.claim.order_id
    if outcome.error_kind is not None:
        return Text(f"{order_id}: failed ({outcome.error_kind}): {outcome.error}", style="red")
    if transition is not None:
        return Text(
            f"{order_id}: {transition.from_status} → {transition.to_status} ({transition.kind})",
            style="bold",
        )
    assert outcome.order is not None  # noqa: S101 - a successful outcome has the order
    if outcome.decision is not None and outcome.decision.store_snapshot:
        first = outcome.claim.status is None
        what = "first snapshot" if first else "changed (same status)"
        return Text(f"{order_id}: {what}: {outcome.order.status}")
    return Text(f"{order_id}: unchanged ({outcome.order.status})")


def history_json(history: History) -> dict[str, Any]:
    """The contract's ``tracker history --json`` object."""
    order = history.order
    return {
        "order_id": order.order_id,
        "status": order.status,
        "state": state_of(order),
        "last_poll_at": iso(order.last_polled_at),
        "last_error": order.last_error,
        "snapshots": [
            {
                "id": s.id,
                "observed_at": iso(s.observed_at),
                "status": s.status,
                "provider": s.provider,
                "order": json.loads(s.raw),
            }
            for s in history.snapshots
        ],
        "transitions": [
            {
                "event_id": t.event_id,
                "from_status": t.from_status,
                "to_status": t.to_status,
                "kind": t.kind,
                "skipped": list(t.skipped),
                "detected_at": iso(t.detected_at),
                "deliveries": [],
            }
            for t in history.transitions
        ],
    }


def history_rich(history: History) -> Group:
    """A readable timeline, oldest first."""
    order = history.order
    lines: list[Text] = [
        Text(
            f"{order.order_id}  {order.status or 'never polled'}  ({state_of(order)})", style="bold"
        )
    ]
    moves = {t.snapshot_id: t for t in history.transitions}
    for snapshot in history.snapshots:
        move = moves.get(snapshot.id)
        when = _short(snapshot.observed_at)
        if move is None:
            lines.append(Text(f"  {when}  snapshot  {snapshot.status}", style="dim"))
            continue
        skipped = f", skipped {', '.join(move.skipped)}" if move.skipped else ""
        lines.append(
            Text(f"  {when}  {move.from_status} → {move.to_status}  [{move.kind}{skipped}]  ")
            + Text(move.event_id, style="dim")
        )
    if order.last_error:
        lines.append(Text(f"  last error: {order.last_error}", style="red"))
    return Group(*lines)
