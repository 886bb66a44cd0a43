"""How the CLI shows orders, polls and histories: rich for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO, TypeVar

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from tracker.model import DaemonRecord, Delivery, DeliveryState, Transition, WatchedOrder
from tracker.shapes import HISTORY_KEYS, shown
from tracker.store import Alert, Attempt, History, Overview, PollOutcome, Store
from tracker.text import Message, printable

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


# -- tables: whole ids and statuses at any width, tab-separated in a pipe -----------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a CLI table."""

    title: str
    #: Ids and statuses: always shown, whole (never wrapped, cut or dropped), so they can be
    #: copied into the next command.
    whole: bool = False
    #: When the terminal is too narrow, the other columns go, the lowest ``keep`` first.
    keep: int = 0

    @property
    def key(self) -> str:
        """The column's name in a tab-separated header row."""
        return self.title.replace(" ", "_")


#: One row of a table, a cell per column; every cell's text is already :func:`printable`.
Cells = list[Text]
#: Columns that may wrap are given at least this many characters before one of them is dropped.
NARROW = 12


async def write_tsv(columns: Sequence[Column], rows: AsyncIterator[Cells], stream: TextIO) -> None:
    """A header row and one line per row, cells separated by tabs, streamed.

    Cells hold no tab or line break: :func:`printable` shows control characters as escapes.
    """
    stream.write("\t".join(column.key for column in columns) + "\n")
    async for cells in rows:
        stream.write("\t".join(cell.plain for cell in cells) + "\n")


def tsv_lines(columns: Sequence[Column], rows: Iterable[Cells]) -> str:
    """:func:`write_tsv` for rows at hand, as one string."""
    lines = ["\t".join(column.key for column in columns)]
    lines += ["\t".join(cell.plain for cell in cells) for cells in rows]
    return "\n".join(lines) + "\n"


def fitted(
    columns: Sequence[Column], rows: Sequence[Cells], width: int, *, title: str | None = None
) -> Table | None:
    """A table of ``rows`` that fits ``width`` without cutting a whole column.

    With a border if it fits, else without; then the other columns are wrapped down to
    :data:`NARROW` characters, then dropped (the lowest ``keep`` first). ``None`` when the
    whole columns alone are wider than ``width``.
    """
    natural = [
        max([Text(column.title).cell_len, *(row[i].cell_len for row in rows)])
        for i, column in enumerate(columns)
    ]
    dropping = sorted(
        (i for i, column in enumerate(columns) if not column.whole), key=lambda i: columns[i].keep
    )
    for dropped in range(len(dropping) + 1):
        kept = [i for i in range(len(columns)) if i not in dropping[:dropped]]
        for boxed in (True, False):
            widths = _widths(columns, natural, kept, width - _frame(len(kept), boxed=boxed))
            if widths is not None:
                return _table(columns, rows, widths, boxed=boxed, title=title)
    return None


def records(columns: Sequence[Column], rows: Sequence[Cells], title: str | None = None) -> Group:
    """The rows one below the other, a line per column (``title  value``), a blank line
    between them: what a terminal too narrow for the whole columns side by side shows."""
    pad = max(len(column.title) for column in columns)
    lines: list[Text] = [Text(title, style="italic")] if title else []
    for n, row in enumerate(rows):
        if n:
            lines.append(Text(""))
        lines += [
            Text(f"{column.title:<{pad}}  ", style="bold") + cell
            for column, cell in zip(columns, row, strict=True)
        ]
    return Group(*lines)


def _frame(count: int, *, boxed: bool) -> int:
    """Characters a table of ``count`` columns takes besides its cells: borders and padding."""
    return 3 * count + 1 if boxed else 2 * (count - 1)


def _widths(
    columns: Sequence[Column], natural: Sequence[int], kept: Sequence[int], room: int
) -> dict[int, int] | None:
    """Each kept column's width within ``room``: whole columns their widest cell, the others
    at least :data:`NARROW` (or their widest cell, if less) and more as room allows; ``None``
    when they cannot fit."""
    widths = {i: natural[i] if columns[i].whole else min(natural[i], NARROW) for i in kept}
    spare = room - sum(widths.values())
    if spare < 0:
        return None
    wanting = [i for i in kept if widths[i] < natural[i]]
    while spare and wanting:
        share = max(1, spare // len(wanting))
        for i in list(wanting):
            grant = min(share, natural[i] - widths[i], spare)
            widths[i] += grant
            spare -= grant
            if widths[i] == natural[i]:
                wanting.remove(i)
    return widths


def _table(
    columns: Sequence[Column],
    rows: Sequence[Cells],
    widths: dict[int, int],
    *,
    boxed: bool,
    title: str | None,
) -> Table:
    """The table with exactly the given column widths (rich shrinks none of them)."""
    table = Table(title=title) if boxed else Table(title=title, box=None, pad_edge=False)
    for i, width in widths.items():
        whole = columns[i].whole
        table.add_column(columns[i].title, width=width, no_wrap=whole, overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in widths))
    return table


def show(
    console: Console, columns: Sequence[Column], rows: Sequence[Cells], title: str | None = None
) -> None:
    """Print a :func:`fitted` table on ``console``, or :func:`records` when none fits."""
    table = fitted(columns, rows, console.width, title=title)
    if table is not None:
        console.print(table)
    else:  # long values wrap within the width; an id or a status is never that long
        console.print(records(columns, rows, title), soft_wrap=False)


WATCHED_COLUMNS = (
    Column("order", whole=True),
    Column("status", whole=True),
    Column("state", keep=5),
    Column("last poll", keep=3),
    Column("last change", keep=4),
    Column("failures", keep=1),
    Column("last error", keep=2),
)


def watched_cells(order: WatchedOrder) -> Cells:
    """One watched order's cells under :data:`WATCHED_COLUMNS`."""
    error = f"{order.last_error_kind}: {order.last_error}" if order.last_error else ""
    return [
        Text(printable(order.order_id)),
        Text(printable(order.status or "-")),
        Text(state_of(order)),
        Text(_short(order.last_polled_at)),
        Text(_short(order.last_change_at)),
        Text(str(order.consecutive_failures)),
        Text(printable(error)),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class StuckOrder:
    """An active order whose current stay was reported stuck (``meter_order.stuck``)."""

    order: WatchedOrder
    #: When its current stay began.
    since: datetime
    #: ``[alerts.stuck]``'s threshold for its status; ``None`` if a reload removed it since.
    threshold: timedelta | None


#: Stuck orders read per query while a listing streams them.
STUCK_BATCH = 500


async def stuck_orders(
    store: Store, thresholds: Mapping[str, timedelta], *, batch: int = STUCK_BATCH
) -> AsyncIterator[StuckOrder]:
    """Every stuck order, the longest stay first, read a batch at a time."""
    after: tuple[datetime, str] | None = None
    while True:
        found = await store.reports.stuck_orders(limit=batch, after=after)
        for order, since in found:
            yield StuckOrder(order=order, since=since, threshold=thresholds.get(order.status or ""))
        if len(found) < batch:
            return
        last, since = found[-1]
        after = (since, last.order_id)


def stuck_dict(stuck: StuckOrder) -> dict[str, Any]:
    """A stuck order as JSON-ready data: the watched order's object with ``stuck``."""
    threshold = stuck.threshold
    return {
        **watched_dict(stuck.order),
        "stuck": {
            "since": iso(stuck.since),
            "threshold_seconds": int(threshold.total_seconds()) if threshold else None,
        },
    }


def span(delta: timedelta | None) -> str:
    """A length of time in its two largest units: ``3d 4h``, ``5h 12m``, ``12m``, ``<1m``."""
    if delta is None:
        return "-"
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else "<1m"


STUCK_COLUMNS = (
    Column("order", whole=True),
    Column("status", whole=True),
    Column("since", keep=2),
    Column("for", keep=3),
    Column("threshold", keep=1),
)


def stuck_cells(stuck: StuckOrder, now: datetime) -> Cells:
    """One stuck order's cells under :data:`STUCK_COLUMNS`."""
    return [
        Text(printable(stuck.order.order_id)),
        Text(printable(stuck.order.status or "-")),
        Text(_short(stuck.since)),
        Text(span(now - stuck.since)),
        Text(span(stuck.threshold)),
    ]


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
        "alerts": [alert_dict(alert) for alert in history.alerts],
    }


def _alert_data(alert: Alert) -> dict[str, Any]:
    """The alert's ``data`` as its webhook body carries it (an unreadable body: none)."""
    try:
        data = json.loads(alert.payload).get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def alert_dict(alert: Alert) -> dict[str, Any]:
    """One alert of a history as JSON-ready data: what it is, when, and what it said."""
    data = _alert_data(alert)
    return {
        "alert": True,
        "event_id": alert.event_id,
        "kind": alert.kind,
        "status": alert.status,
        "raised_at": iso(alert.raised_at),
        "details": {k: v for k, v in data.items() if k not in {"event_id", "order_id", "status"}},
    }


def alert_text(alert: Alert) -> str:
    """One alert in words: ``stuck in ordered since …``, ``3 failed polls in a row: …``."""
    return str(alert_words(alert.kind, alert.status, _alert_data(alert)))


def alert_words(kind: str, status: str | None, details: dict[str, Any]) -> Message:
    """One alert in words, as a :class:`~tracker.text.Message` a page can translate."""
    if kind == "stuck":
        return Message(
            "stuck in %(status)s since %(since)s, longer than %(threshold)s",
            status=status,
            since=details.get("since", "?"),
            threshold=details.get("threshold", "?"),
        )
    if kind == "poll_failing":
        return Message(
            "%(failures)s failed polls in a row: %(kind)s: %(error)s",
            failures=details.get("failures", "?"),
            kind=details.get("last_error_kind", "?"),
            error=details.get("last_error", ""),
        )
    if kind == "poll_recovered":
        return Message(
            "polled again after %(failures)s failed polls", failures=details.get("failures", "?")
        )
    return Message(kind)


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


DELIVERY_COLUMNS = (
    Column("event", whole=True),
    Column("order", whole=True),
    Column("sink", whole=True),
    Column("state", whole=True),
    Column("attempts", keep=1),
    Column("last answer", keep=3),
    Column("next attempt", keep=2),
)


def delivery_cells(d: Delivery, sinks: Collection[str] | None = None) -> Cells:
    """One delivery's cells under :data:`DELIVERY_COLUMNS`; with the configured ``sinks``, a
    pending one whose sink is not configured shows as ``orphaned`` (and why, as its answer)."""
    answer = d.last_error or (f"HTTP {d.last_status}" if d.last_status else "-")
    state = Text(d.state.value, style=_STATE_STYLE[d.state])
    if orphaned(d, sinks):
        state = Text("orphaned", style="magenta")
        answer = f"pending, sink not configured; {answer}"
    return [
        Text(printable(d.event_id)),
        Text(printable(d.order_id or "-")),
        Text(printable(d.sink)),
        state,
        Text(str(d.attempts)),
        Text(printable(answer)),
        Text(_short(d.next_attempt_at) if d.state is DeliveryState.PENDING else "-"),
    ]


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
    alerts = list(history.alerts)
    for snapshot in history.snapshots:
        while alerts and alerts[0].raised_at < snapshot.observed_at:
            lines.append(_alert_line(alerts.pop(0)))
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
    lines += [_alert_line(alert) for alert in alerts]
    if order.last_error:
        lines.append(Text(printable(f"  last error: {order.last_error}"), style="red"))
    return Group(*lines)


def _alert_line(alert: Alert) -> Text:
    """An alert in the timeline, marked as one: ``ALERT`` and its kind."""
    return (
        Text(f"  {_short(alert.raised_at)}  ")
        + Text(f"ALERT {alert.kind}", style="bold magenta")
        + Text(printable(f"  {alert_text(alert)}  "))
        + Text(alert.event_id, style="dim")
    )


def _delivery_line(d: Delivery) -> Text:
    failed = d.last_error is not None and d.state is not DeliveryState.DELIVERED
    note = f" ({d.last_error})" if failed else ""
    return (
        Text("      → ")
        + Text(f"{d.sink}: {d.state.value}", style=_STATE_STYLE[d.state])
        + Text(printable(f", {d.attempts} attempt(s){note}"))
    )


def attempt_line(attempt: Attempt, *, event_id: str, order_id: str, sink: str) -> Text:
    """One line saying how a delivery attempt went: the event, its order, the sink, the state."""
    answer = attempt.error or (f"answer {attempt.status}" if attempt.status else "")
    style = _STATE_STYLE[DeliveryState(attempt.state)]
    return (
        Text(printable(f"{event_id} {order_id or '-'} {sink}: "))
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


def status_json(
    overview: Overview,
    now: datetime,
    sinks: Collection[str] = (),
    change_sweeps: tuple[str, str | None] = ("off", None),
) -> dict[str, Any]:
    """``tracker status --json``: daemons, orders, deliveries, the last successful poll, and
    whether change sweeps run and are trusted (``change_sweeps``: mode and why).

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
        "change_sweeps": {"mode": change_sweeps[0], "reason": change_sweeps[1]},
    }


DAEMON_COLUMNS = (
    Column("daemon", whole=True),
    Column("host", keep=4),
    Column("pid", keep=3),
    Column("version", keep=1),
    Column("started", keep=2),
    Column("last heartbeat", keep=5),
)
ORDER_COUNT_COLUMNS = (Column("status", whole=True), Column("state"), Column("orders"))
DELIVERY_COUNT_COLUMNS = (
    Column("sink", whole=True),
    Column("state", whole=True),
    Column("deliveries", keep=2),
    Column("oldest pending", keep=1),
)


def status_sections(
    overview: Overview, now: datetime, sinks: Collection[str] = ()
) -> list[tuple[str, tuple[Column, ...], list[Cells]]]:
    """``tracker status``'s three tables: a title, the columns and the rows of each."""
    daemons = [
        [
            *(Text(printable(cell)) for cell in (d.id, d.host, str(d.pid), d.version)),
            Text(_short(d.started_at)),
            Text(f"{(now - d.heartbeat_at).total_seconds():.0f} s ago"),
        ]
        for d in overview.daemons
    ]
    orders = [
        [Text(printable(status or "-")), Text(state), Text(str(count))]
        for status, state, count in overview.orders
    ]
    sent = [
        [
            Text(printable(sink if sink in sinks else f"{sink} (orphaned)")),
            Text(state),
            Text(str(count)),
            Text(f"{(now - oldest).total_seconds():.0f} s" if oldest is not None else "-"),
        ]
        for sink, state, count, oldest in overview.deliveries
    ]
    return [
        ("daemons", DAEMON_COLUMNS, daemons),
        ("watched orders", ORDER_COUNT_COLUMNS, orders),
        ("deliveries", DELIVERY_COUNT_COLUMNS, sent),
    ]


def show_status(
    console: Console,
    overview: Overview,
    now: datetime,
    sinks: Collection[str] = (),
    change_sweeps: tuple[str, str | None] = ("off", None),
) -> None:
    """``tracker status`` for people: three tables, the last successful poll and the change
    sweeps' mode; in a pipe, each table as tab-separated rows under a header row, a blank
    line between them."""
    last = _short(overview.last_success_at)
    mode, why = change_sweeps
    sweeps = mode if why is None else f"{mode}: {printable(why)}"
    sections = status_sections(overview, now, sinks)
    if not console.is_terminal:
        blocks = [tsv_lines(columns, rows) for _title, columns, rows in sections]
        lines = [*blocks, f"last_successful_poll\n{last}\n", f"change_sweeps\n{sweeps}\n"]
        console.file.write("\n".join(lines))
        return
    for title, columns, rows in sections:
        if title == "daemons" and not rows:
            console.print(Text("no daemon is running"))
            continue
        show(console, columns, rows, title=title)
    console.print(Text(f"last successful poll: {last}"))
    console.print(Text(f"change sweeps: {sweeps}"))
