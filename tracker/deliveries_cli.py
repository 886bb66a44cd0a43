"""``tracker deliveries list|retry`` and ``tracker sinks test``: the outbox on the command line."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from tracker.cli_base import ConfigOption, list_rows, out, settings_of, with_store
from tracker.clock import utc_now
from tracker.errors import ConfigError
from tracker.model import DeliveryState, SendResult
from tracker.text import printable

if TYPE_CHECKING:
    from tracker.config import Settings
    from tracker.store import Store

deliveries_app = typer.Typer(no_args_is_help=True, help="The delivery outbox.")
sinks_app = typer.Typer(no_args_is_help=True, help="The configured sinks.")


@deliveries_app.command("list")
def deliveries_list(
    ctx: typer.Context,
    state: Annotated[
        DeliveryState | None, typer.Option("--state", help="Only deliveries in STATE.")
    ] = None,
    sink: Annotated[str | None, typer.Option("--sink", help="Only deliveries to SINK.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    config: ConfigOption = None,
) -> None:
    """Deliveries, oldest first, with their state, attempts and last answer."""
    import functools

    from tracker.views import DELIVERY_COLUMNS, delivery_cells, delivery_dict

    settings = settings_of(ctx, config, logs=False)
    chosen = state.value if state else None
    sinks = {entry.name for entry in settings.sinks}
    list_rows(
        settings,
        lambda store: store.outbox.deliveries(state=chosen, sink=sink),
        functools.partial(delivery_dict, sinks=sinks),
        DELIVERY_COLUMNS,
        functools.partial(delivery_cells, sinks=sinks),
        as_json=as_json,
        check=None if sink is None else lambda store: _known_sink(store, sink, sinks),
    )


@deliveries_app.command("retry")
def deliveries_retry(
    ctx: typer.Context,
    event_ids: Annotated[list[str] | None, typer.Argument(metavar="EVENT_ID...")] = None,
    *,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead delivery.")] = False,
    sink: Annotated[
        str | None, typer.Option("--sink", metavar="NAME", help="With --all-dead: to NAME only.")
    ] = None,
    order: Annotated[
        str | None, typer.Option("--order", metavar="ID", help="With --all-dead: of order ID only.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make deliveries pending again and attempt them once now."""
    from tracker import retries

    settings = settings_of(ctx, config)
    if all_dead == bool(event_ids):
        raise ConfigError("give EVENT_IDs or --all-dead (one of them)")
    if (sink is not None or order is not None) and not all_dead:
        raise ConfigError("--sink and --order narrow --all-dead; give --all-dead too")

    async def retry(store: Store) -> bool:
        if event_ids:
            unknown = await retries.unknown_events(store, event_ids)
            if unknown:
                raise ConfigError(
                    f"no delivery of event {printable(', '.join(unknown))}; nothing was retried "
                    "(see `tracker deliveries list`)"
                )
        else:
            configured = {entry.name for entry in settings.sinks}
            problem = await retries.filter_problem(
                store, sink=sink, order_id=order, configured=configured
            )
            if problem is not None:
                raise ConfigError(f"{problem}; nothing was retried")
        return await _retry_and_attempt(settings, store, event_ids, sink=sink, order_id=order)

    if not with_store(settings, retry):
        raise typer.Exit(1)


async def _retry_and_attempt(
    settings: Settings,
    store: Store,
    event_ids: Sequence[str] | None,
    *,
    sink: str | None,
    order_id: str | None,
) -> bool:
    """Queue the deliveries again (through :mod:`tracker.retries`), attempt every due one
    once, and print a line per retried or attempted delivery: event, order, sink, outcome."""
    from tracker import retries
    from tracker.service import delivery_lease, open_outbox
    from tracker.views import attempt_line

    async with open_outbox(settings, store) as dispatcher:
        now = utc_now()
        if event_ids:
            queued = await retries.retry_events(store, event_ids, now=now)
        else:
            queued = await retries.retry_dead(store, sink=sink, order_id=order_id, now=now)
        out.print(f"{len(queued)} delivery(ies) pending again")
        attempts, claimed = [], {}
        for name in dispatcher.sinks:
            now = utc_now()
            due = await store.outbox.claim(
                sink=name, now=now, limit=10_000, lease_until=now + delivery_lease(settings)
            )
            claimed.update({d.id: d for d in due})
            attempts += await dispatcher.deliver(due)
        sent = [claimed[a.delivery_id] for a in attempts]
        orders = {d.event_id: d.order_id for d in queued} | {
            d.event_id: d.order_id
            for d in await store.reports.deliveries_of([d.event_id for d in sent])
        }
        for attempt, one in zip(attempts, sent, strict=True):
            line = attempt_line(
                attempt, event_id=one.event_id, order_id=orders.get(one.event_id, ""), sink=one.sink
            )
            out.print(line)
        tried = {(one.event_id, one.sink) for one in sent}
        for left in queued:
            if (left.event_id, left.sink) not in tried:
                out.print(
                    printable(
                        f"{left.event_id} {left.order_id or '-'} {left.sink}: pending "
                        "(no configured sink of that name; not attempted)"
                    )
                )
        return all(a.state == DeliveryState.DELIVERED for a in attempts)


@sinks_app.command("test")
def sinks_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    config: ConfigOption = None,
) -> None:
    """Send a clearly marked test event to one sink and show the receiver's answer."""
    from rich.text import Text

    from tracker.service import open_outbox
    from tracker.sinks.render import test_delivery

    settings = settings_of(ctx, config)

    async def send(store: Store) -> SendResult:
        async with open_outbox(settings, store) as dispatcher:
            sink = dispatcher.sinks.get(name)
            if sink is None:
                known = ", ".join(dispatcher.sinks) or "none configured"
                raise ConfigError(f"no sink named {name!r}; sinks: {known}")
            return await sink.send(test_delivery(name, utc_now()))

    result = with_store(settings, send)
    if result.ok:
        out.print(f"{name}: delivered (answer {result.status})")
        return
    out.print(Text(printable(f"{name}: failed: {result.error}")))
    raise typer.Exit(1)


async def _known_sink(store: Store, sink: str, configured: Collection[str]) -> None:
    """Refuse (exit 2) a sink filter that names no configured sink and no stored delivery's."""
    if sink in configured or await store.outbox.page(sink=sink, limit=1):
        return
    known = ", ".join(sorted(configured)) or "none configured"
    raise ConfigError(
        f"--sink {printable(sink)!r}: no sink of that name is configured or has deliveries; "
        f"sinks: {known}"
    )
