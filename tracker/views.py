"""How the CLI shows orders, polls and histories: rich for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from datetime import datetime
from typing import Any, TextIO, TypeVar

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tracker.model import DaemonRecord, Delivery, DeliveryState, Transition, WatchedOrder
from tracker.shapes import HISTORY_KEYS, shown
from tracker.store import Attempt, History, Overview, PollOutcome
from tracker.text import printable

T = TypeVar("T")


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
        "customer": order.customer,
        "subscription": order.subscription,
    }


async def json_array(
    rows: AsyncIterator[T], as_dict: Callable[[T], dict[str, Any]], stream: TextIO
) -> None:
    """Write a JSON array, one row at a time, so a long listing never sits in memory."""
    stream.write("[")
    first = True
    async for row in rows:
        stream.write(("\n  " if first else ",\n  ") + json.dumps(as_dict(row)))
        first = False
    stream.write("\n]\n" if not first else "]\n")


async def watched_table(rows: AsyncIterator[WatchedOrder]) -> Table:
    """A table of watched orders."""
    table = Table("order", "status", "state", "last poll", "last change", "failures", "last error")
    async for order in rows:
        table.add_row(
            order.order_id,
            Text(printable(order.status or "-")),
            state_of(order),
            _short(order.last_polled_at),
            _short(order.last_change_at),
            str(order.consecutive_failures),
            Text(
                printable(
                    f"{order.last_error_kind}: {order.last_error}" if order.last_error else ""
                )
            ),
        )
    return table


def outcome_line(outcome: PollOutcome, transition: Transition | None) -> Text:
    """One line saying what a poll found."""
    order_id = outcome.claim.order_id
    if outcome.error_kind is not None:
        return Text(printable(f"{order_id}: failed ({outcome.error_kind}): {outcome.error}"), "red")
    if transition is not None:
        move = f"{transition.from_status} → {transition.to_status} ({transition.kind})"
        return Text(printable(f"{order_id}: {move}"), style="bold")
    assert outcome.order is not None  # noqa: S101 - a successful outcome has the order
    if outcome.decision is not None and outcome.decision.store_snapshot:
        first = outcome.claim.status is None
        what = "first snapshot" if first else "changed (same status)"
        return Text(printable(f"{order_id}: {what}: {outcome.order.status}"))
    return Text(printable(f"{order_id}: unchanged ({outcome.order.status})"))


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
            transition_dict(t, history.deliveries.get(t.event_id, ())) for t in history.transitions
        ],
    }


def transition_dict(transition: Transition, deliveries: Iterable[Delivery]) -> dict[str, Any]:
    """One transition of a history as JSON-ready data, with its ``deliveries``."""
    data = shown(transition, HISTORY_KEYS, detected_at=iso(transition.detected_at))
    data["deliveries"] = [delivery_dict(d, brief=True) for d in deliveries]
    return data


def orphaned(delivery: Delivery, sinks: Collection[str] | None) -> bool:
    """Pending for a sink no longer configured: kept, not sent, until the sink returns."""
    return (
        sinks is not None and delivery.state is DeliveryState.PENDING and delivery.sink not in sinks
    )


def delivery_dict(
    delivery: Delivery, *, brief: bool = False, sinks: Collection[str] | None = None
) -> dict[str, Any]:
    """One delivery as JSON-ready data (``brief``: as nested in a history).

    With the configured ``sinks``, ``orphaned`` says whether its sink was removed.
    """
    data: dict[str, Any] = {
        "sink": delivery.sink,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "delivered_at": iso(delivery.delivered_at),
        "next_attempt_at": iso(delivery.next_attempt_at)
        if delivery.state is DeliveryState.PENDING
        else None,
    }
    if not brief:
        data = {"event_id": delivery.event_id, "order_id": delivery.order_id, **data}
    if sinks is not None:
        data["orphaned"] = orphaned(delivery, sinks)
    return data


async def deliveries_table(
    rows: AsyncIterator[Delivery], sinks: Collection[str] | None = None
) -> Table:
    """A table of deliveries; with the configured ``sinks``, orphaned ones say so."""
    table = Table("event", "order", "sink", "state", "attempts", "last answer", "next attempt")
    async for d in rows:
        answer = d.last_error or (f"HTTP {d.last_status}" if d.last_status else "-")
        state = (
            Text("pending (orphaned: sink not configured)", style="magenta")
            if orphaned(d, sinks)
            else Text(d.state.value, style=_STATE_STYLE[d.state])
        )
        table.add_row(
            d.event_id,
            d.order_id,
            d.sink,
            state,
            str(d.attempts),
            Text(printable(answer)),
            _short(d.next_attempt_at) if d.state is DeliveryState.PENDING else "-",
        )
    return table


_STATE_STYLE = {
    DeliveryState.PENDING: "yellow",
    DeliveryState.DELIVERED: "green",
    DeliveryState.DEAD: "bold red",
}


def history_rich(history: History) -> Group:
    """A readable timeline, oldest first."""
    order = history.order
    head = f"{order.order_id}  {order.status or 'never polled'}  ({state_of(order)})"
    lines: list[Text] = [Text(printable(head), style="bold")]
    moves = {t.snapshot_id: t for t in history.transitions}
    for snapshot in history.snapshots:
        move = moves.get(snapshot.id)
        when = _short(snapshot.observed_at)
        if move is None:
            lines.append(Text(printable(f"  {when}  snapshot  {snapshot.status}"), style="dim"))
            continue
        skipped = f", skipped {', '.join(move.skipped)}" if move.skipped else ""
        lines.append(
            Text(printable(f"  {when}  {move.from_status} → {move.to_status}  "))
            + Text(f"[{move.kind}{skipped}]  ")
            + Text(move.event_id, style="dim")
        )
        lines += [_delivery_line(d) for d in history.deliveries.get(move.event_id, ())]
    if order.last_error:
        lines.append(Text(printable(f"  last error: {order.last_error}"), style="red"))
    return Group(*lines)


def _delivery_line(d: Delivery) -> Text:
    failed = d.last_error is not None and d.state is not DeliveryState.DELIVERED
    note = f" ({d.last_error})" if failed else ""
    return (
        Text("      → ")
        + Text(f"{d.sink}: {d.state.value}", style=_STATE_STYLE[d.state])
        + Text(printable(f", {d.attempts} attempt(s){note}"))
    )


def attempt_line(attempt: Attempt) -> Text:
    """One line saying how a delivery attempt went."""
    answer = attempt.error or (f"answer {attempt.status}" if attempt.status else "")
    style = _STATE_STYLE[DeliveryState(attempt.state)]
    return (
        Text(f"delivery {attempt.delivery_id}: ")
        + Text(attempt.state, style=style)
        + Text(printable(f" after attempt {attempt.attempts} {answer}".rstrip()))
    )


def daemon_dict(daemon: DaemonRecord) -> dict[str, Any]:
    """One live daemon as JSON-ready data."""
    return {
        "id": daemon.id,
        "host": daemon.host,
        "pid": daemon.pid,
        "version": daemon.version,
        "started_at": iso(daemon.started_at),
        "heartbeat_at": iso(daemon.heartbeat_at),
    }


def status_json(overview: Overview, now: datetime, sinks: Collection[str] = ()) -> dict[str, Any]:
    """``tracker status --json``: daemons, orders, deliveries and the last successful poll.

    A sink that is not among the configured ``sinks`` is ``orphaned``: its pending
    deliveries wait for it to return.
    """
    return {
        "daemons": [daemon_dict(d) for d in overview.daemons],
        "orders": [
            {"status": status, "state": state, "count": count}
            for status, state, count in overview.orders
        ],
        "deliveries": [
            {
                "sink": sink,
                "state": state,
                "count": count,
                "orphaned": sink not in sinks,
                "oldest_pending_age_seconds": (
                    round((now - oldest).total_seconds(), 3) if oldest is not None else None
                ),
            }
            for sink, state, count, oldest in overview.deliveries
        ],
        "last_successful_poll_at": iso(overview.last_success_at),
    }


def status_rich(overview: Overview, now: datetime, sinks: Collection[str] = ()) -> Group:
    """``tracker status`` for people: three small tables and the last successful poll."""
    daemons = Table(
        "daemon", "host", "pid", "version", "started", "last heartbeat", title="daemons"
    )
    for d in overview.daemons:
        ago = f"{(now - d.heartbeat_at).total_seconds():.0f} s ago"
        row = (d.id, d.host, str(d.pid), d.version, _short(d.started_at), ago)
        daemons.add_row(*(Text(printable(cell)) for cell in row))
    orders = Table("status", "state", "orders", title="watched orders")
    for status, state, count in overview.orders:
        orders.add_row(Text(printable(status or "-")), state, str(count))
    sent = Table("sink", "state", "deliveries", "oldest pending", title="deliveries")
    for sink, state, count, oldest in overview.deliveries:
        age = f"{(now - oldest).total_seconds():.0f} s" if oldest is not None else "-"
        name = sink if sink in sinks else f"{sink} (orphaned: not configured)"
        sent.add_row(Text(printable(name)), state, str(count), age)
    last = Text(f"last successful poll: {_short(overview.last_success_at)}")
    none = Text("no daemon is running") if not overview.daemons else Text("")
    return Group(daemons if overview.daemons else none, orders, sent, last)
