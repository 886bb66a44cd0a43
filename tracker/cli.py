"""The command line: parses, calls, prints. Exit 0 success, 1 runtime failure, 2 usage/config."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tracker.cli_base import (
    ConfigOption,
    config_path,
    list_rows,
    out,
    run_async,
    settings_of,
    with_store,
)
from tracker.clock import utc_now
from tracker.deliveries_cli import deliveries_app, sinks_app
from tracker.errors import ConfigError, TrackerError
from tracker.model import validate_order_id
from tracker.report_cli import report_app
from tracker.text import printable

if TYPE_CHECKING:
    from contextlib import AsyncExitStack

    from tracker.config import Settings
    from tracker.daemon import Daemon
    from tracker.service import Reloader, Service
    from tracker.store import Store
    from tracker.views import StuckOrder
    from tracker.web import Metrics

# Each command imports what it uses in its own body: `--help`, `--version` and the reading
# commands never load the configuration's validators, the database, the daemon or the clients
# they do not need, so they answer at once.

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Tracks Nomos smart-meter orders and delivers every status change.",
)
db_app = typer.Typer(no_args_is_help=True, help="The database.")
watch_app = typer.Typer(no_args_is_help=True, help="Which orders are watched.")
config_app = typer.Typer(no_args_is_help=True, help="The configuration file.")
app.add_typer(db_app, name="db")
app.add_typer(watch_app, name="watch")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(sinks_app, name="sinks")
app.add_typer(config_app, name="config")
app.add_typer(report_app, name="report")


def _version(asked: bool) -> None:
    if asked:
        from importlib import metadata

        out.print(f"meter-order-tracker {metadata.version('meter-order-tracker')}")
        raise typer.Exit


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = None,
    version: Annotated[  # noqa: ARG001 - handled by its callback, before any command
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = {"config": config}


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Apply pending database migrations."""
    from tracker.store import upgrade

    settings = settings_of(ctx, config)
    applied = upgrade(settings.database.url)
    out.print(f"migrated: {applied[0]}" if applied else "database is up to date")


def _ids_from(ids: list[str], file: Path | None) -> list[str]:
    wanted = list(ids)
    if file is not None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"--file {file}: cannot read it ({exc.strerror})") from exc
        wanted += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not wanted:
        raise ConfigError("no order ids given: pass IDs or --file FILE")
    return [validate_order_id(order_id) for order_id in wanted]


async def _known_status(store: Store, status: str) -> None:
    """Refuse (exit 2) a status filter that is none of the 14 and that no watched order has
    (an order may stand in a status the provider added: it can be listed by it)."""
    from tracker.lifecycle import Status, is_known

    if is_known(status) or await store.orders.page(status=status, limit=1):
        return
    raise ConfigError(
        f"--status {printable(status)!r} is not a known status and no watched order has it; "
        f"use one of: {', '.join(Status)}"
    )


async def _known_orders(store: Store, order_ids: Sequence[str]) -> None:
    """Refuse (exit 2) order ids that were never watched, naming them, before any change."""
    known = await store.reports.watched_ids(order_ids)
    unknown = [order_id for order_id in dict.fromkeys(order_ids) if order_id not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (
            f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        )
        raise ConfigError(f"never watched: {shown}; nothing was changed (see `tracker watch list`)")


IdsArgument = Annotated[list[str] | None, typer.Argument(metavar="ID...", show_default=False)]
FileOption = Annotated[
    Path | None, typer.Option("--file", help="Read order ids from FILE, one per line.")
]


@watch_app.command("add")
def watch_add(
    ctx: typer.Context,
    ids: IdsArgument = None,
    file: FileOption = None,
    config: ConfigOption = None,
) -> None:
    """Watch orders; they are polled at the next tick of `tracker run`."""
    settings = settings_of(ctx, config)
    wanted = _ids_from(ids or [], file)
    added = with_store(
        settings, lambda store: store.orders.watch(wanted, source="cli", now=utc_now())
    )
    out.print(f"watching {len(added)} new order(s); {len(wanted) - len(added)} already watched")


@watch_app.command("remove")
def watch_remove(
    ctx: typer.Context,
    ids: IdsArgument = None,
    file: FileOption = None,
    config: ConfigOption = None,
) -> None:
    """Stop watching orders; their history is kept."""
    settings = settings_of(ctx, config)
    wanted = _ids_from(ids or [], file)

    async def unwatch(store: Store) -> list[str]:
        await _known_orders(store, wanted)
        return await store.orders.unwatch(wanted, now=utc_now())

    removed = with_store(settings, unwatch)
    out.print(f"stopped watching {len(removed)} order(s)")
    if in_config := sorted(set(removed) & set(settings.watch.orders)):
        out.print(f"note: {', '.join(in_config)} stay listed in [watch] orders but stay removed")


@watch_app.command("list")
def watch_list(  # noqa: PLR0917 - typer passes each option by name
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only orders in STATUS.")] = None,
    stuck: Annotated[
        bool,
        typer.Option(
            "--stuck",
            help="Only the orders stuck now, per [alerts.stuck] (reported by the daemon within "
            "10 s of crossing), longest first, with since when and for how long.",
        ),
    ] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Only orders watched by a [watch] rule (rule) or added by hand or in "
            "[watch] orders (manual).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    config: ConfigOption = None,
) -> None:
    """The watched orders with status, last poll, last change and last error."""
    from tracker.views import WATCHED_COLUMNS, watched_cells, watched_dict

    settings = settings_of(ctx, config, logs=False)
    if source not in {None, "rule", "manual"}:
        raise ConfigError(f"--source {source!r}: give rule or manual")
    if stuck:
        _stuck_list(settings, status=status, as_json=as_json)
        return
    list_rows(
        settings,
        lambda store: store.orders.watched(status=status, by_rule=_by_rule(source)),
        watched_dict,
        WATCHED_COLUMNS,
        watched_cells,
        as_json=as_json,
        check=None if status is None else lambda store: _known_status(store, status),
    )


def _by_rule(source: str | None) -> bool | None:
    """``--source``: only orders watched by rule (``True``), only the others, or all."""
    return None if source is None else source == "rule"


def _stuck_list(settings: Settings, *, status: str | None, as_json: bool) -> None:
    """``watch list --stuck``: the stuck orders (in ``status`` only, if given), longest first."""
    import functools

    from tracker.views import STUCK_COLUMNS, stuck_cells, stuck_dict, stuck_orders

    thresholds = settings.alerts.stuck

    async def rows(store: Store) -> AsyncIterator[StuckOrder]:
        async for found in stuck_orders(store, thresholds):
            if status is None or found.order.status == status:
                yield found

    list_rows(
        settings,
        rows,
        stuck_dict,
        STUCK_COLUMNS,
        functools.partial(stuck_cells, now=utc_now()),
        as_json=as_json,
        check=None if status is None else lambda store: _known_status(store, status),
    )


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    config: ConfigOption = None,
) -> None:
    """How the tracker stands: live daemons, orders, deliveries, the last successful poll."""
    from tracker.model import STALE_AFTER
    from tracker.trust import SweepState, sweep_mode
    from tracker.views import show_status, status_json

    settings = settings_of(ctx, config, logs=False)
    now = utc_now()
    overview = with_store(
        settings,
        lambda store: store.reports.overview(stale_before=now - STALE_AFTER),
        reading=True,
    )
    sinks = [entry.name for entry in settings.sinks]
    sweeps = sweep_mode(
        rules=settings.watch.rules,
        changes_every=settings.polling.changes_every,
        state=SweepState.loads(overview.sweeps),
    )
    if as_json:
        sys.stdout.write(json.dumps(status_json(overview, now, sinks, sweeps), indent=2) + "\n")
    else:
        show_status(out, overview, now, sinks, sweeps)


@app.command("poll")
def poll(
    ctx: typer.Context,
    ids: IdsArgument = None,
    all_orders: Annotated[bool, typer.Option("--all", help="Poll every active order.")] = False,
    config: ConfigOption = None,
) -> None:
    """Poll orders now, once, and print what changed."""
    from tracker.app import open_polling
    from tracker.poller import poll_now
    from tracker.views import outcome_line

    settings = settings_of(ctx, config)
    if all_orders == bool(ids):
        raise ConfigError("give order IDs or --all (one of them)")
    wanted = [validate_order_id(i) for i in ids or []]

    async def once() -> bool:
        async with open_polling(settings, one_shot=True) as polling:
            lease = utc_now() + polling.lease
            if all_orders:
                claims = await polling.store.polls.claim_all(lease_until=lease)
            else:
                claims = await polling.store.polls.claim(wanted, lease_until=lease)
                missing = sorted(set(wanted) - {c.order_id for c in claims})
                if missing:
                    await polling.store.polls.release([c.order_id for c in claims])
                    raise ConfigError(
                        f"not watched: {', '.join(missing)}; run `tracker watch add ID` first"
                    )
            every_poll_succeeded = True
            windows = poll_now(polling.store, polling.poller, claims, lease=polling.lease)
            async for outcomes, transitions in windows:
                changes = {t.order_id: t for t in transitions}
                for outcome in outcomes:
                    out.print(outcome_line(outcome, changes.get(outcome.claim.order_id)))
                    every_poll_succeeded &= outcome.error_kind is None
            # Without a daemon (polls from cron), the board's kept counts are folded here.
            await polling.store.tally.fold()
            return every_poll_succeeded

    if not run_async(once()):
        raise typer.Exit(1)


@app.command("history")
def history(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    config: ConfigOption = None,
) -> None:
    """The order's timeline: snapshots, transitions and their deliveries."""
    from tracker.views import history_json, history_rich

    settings = settings_of(ctx, config, logs=False)
    validate_order_id(order_id)
    found = with_store(settings, lambda store: store.reports.history(order_id), reading=True)
    if found is None:
        raise ConfigError(f"{order_id} has never been watched; see `tracker watch list`")
    if as_json:
        sys.stdout.write(json.dumps(history_json(found), indent=2) + "\n")
    else:
        out.print(history_rich(found))


@app.command("export")
def export(
    ctx: typer.Context,
    *,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Required. From DATE on, inclusive: YYYY-MM-DD (midnight UTC), ISO 8601 "
            "with an offset, today or yesterday (midnight UTC: there is no local zone "
            "setting yet), or Nd (N times 24 hours before now, e.g. 7d).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", metavar="DATE", help="Before DATE (exclusive); the same forms as --since."
        ),
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="csv|ndjson",
            help="CSV with a header row, or one JSON object per line.",
        ),
    ] = "csv",
    status: Annotated[
        str | None, typer.Option("--status", metavar="S", help="Only transitions to status S.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", metavar="FILE", help="Write FILE, once complete, not stdout."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Transitions of a period, oldest first, with their delivery states, for reporting."""
    from tracker.export import ExportRequest, output_file, stdout_stream
    from tracker.export import export as write_export

    request = ExportRequest.parse(since=since, until=until, fmt=fmt, status=status)
    settings = settings_of(ctx, config, logs=False)
    if output is not None:
        with output_file(output) as stream:
            run_async(write_export(settings.database.url, request, stream, terminal=False))
        return
    try:
        with stdout_stream() as stream:
            run_async(
                write_export(settings.database.url, request, stream, terminal=sys.stdout.isatty())
            )
    except BrokenPipeError:
        raise typer.Exit(1) from None  # the reader stopped early (`| head`): nothing to add


@config_app.command("check")
def config_check(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Check the configuration file without connecting anywhere; run it before a reload.

    Every key is checked as at start, the sinks are built (their templates compiled) and the
    database URL's shape is read; one line says what it found.
    """
    from rich.text import Text

    from tracker.store.url import database_shape

    path = config_path(ctx, config)
    settings = settings_of(ctx, config)
    database = database_shape(settings.database.url)

    async def sinks() -> list[str]:
        import httpx

        from tracker.sinks.registry import build_sinks

        # The sinks are built as `tracker run` builds them (templates compiled and rendered
        # once, the relay's CA read); the client is never used, so nothing is connected to.
        async with httpx.AsyncClient(trust_env=False) as http:
            return list(build_sinks(settings, http))

    names = run_async(sinks())
    listen = settings.http.listen or "none"
    out.print(
        Text(
            printable(
                f"config ok: {path} (sinks: {', '.join(names) or 'none'}; database: {database}; "
                f"listen: {listen}; http users: {len(settings.http.users)})"
            )
        )
    )


@app.command("run")
def run(ctx: typer.Context, config: ConfigOption = None) -> None:
    """The daemon: polls on schedule until SIGTERM or SIGINT; SIGHUP reloads the configuration.

    With an HTTP listener configured it serves health, metrics and the API on the same event loop.
    """
    import contextlib

    from tracker.daemon import run_until_signalled
    from tracker.logs import configure as configure_logs
    from tracker.service import Reloader, open_service
    from tracker.telemetry import SILENT, Telemetry

    settings = settings_of(ctx, config)
    configure_logs(settings.log)
    metrics = None
    if settings.http.address is not None:
        from tracker.web import Metrics

        metrics = Metrics()
    telemetry: Telemetry = metrics or SILENT

    async def daemon() -> None:
        async with (
            open_service(settings, telemetry=telemetry) as service,
            contextlib.AsyncExitStack() as http,
        ):
            daemon = service.daemon()
            listeners: list[Callable[[Settings], None]] = []
            reload = Reloader(config_path(ctx, config), service, daemon, listeners=listeners)
            if metrics is not None:
                await _listen(
                    http,
                    service,
                    daemon=daemon,
                    reload=reload,
                    metrics=metrics,
                    listeners=listeners,
                )
            await run_until_signalled(daemon, reload)

    run_async(daemon())


async def _listen(
    stack: AsyncExitStack,
    service: Service,
    *,
    daemon: Daemon,
    reload: Reloader,
    metrics: Metrics,
    listeners: list[Callable[[Settings], None]],
) -> None:
    """Serve the daemon's HTTP listener until ``stack`` closes, on its own small pool (no
    client can take polling's connections); a reload swaps its users and language."""
    import structlog

    from tracker.store import listener_store
    from tracker.web import build_app, listening
    from tracker.web.auth import Users
    from tracker.web.i18n import Localization

    settings = service.settings
    address = settings.http.address
    assert address is not None  # noqa: S101 - only called with a listener configured
    store = await stack.enter_async_context(listener_store(settings.database.url))
    users = Users(settings.http.users, logins=store.logins)
    localization = Localization.from_settings(settings.http)

    def reload_users(new: Settings) -> None:
        localization.replace(new.http)
        ended = users.replace(new.http.users)
        if ended:
            structlog.get_logger("tracker.web").info(
                "http_sessions_ended", users=ended, reason="reload"
            )

    listeners.append(reload_users)
    web = build_app(
        store=store,
        probe=service.store,
        metrics=metrics,
        readiness=daemon.readiness,
        sinks=lambda: [entry.name for entry in reload.settings.sinks],
        users=users,
        webhook_secret=settings.upstream.webhook_secret,
        targets=lambda: reload.settings.alerts.stuck,
        localization=localization,
    )
    await stack.enter_async_context(listening(web, address))


@app.command("serve")
def serve(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Health, metrics and the API on the configured listener, without polling or delivering."""
    from tracker.logs import configure as configure_logs
    from tracker.web import Metrics, build_app, serve_until_signalled
    from tracker.web.i18n import Localization

    settings = settings_of(ctx, config)
    address = settings.http.address
    if address is None:
        raise ConfigError(
            'http.listen: not set; `tracker serve` needs [http] listen = "127.0.0.1:8080"'
        )
    configure_logs(settings.log)
    sinks = [entry.name for entry in settings.sinks]

    async def serving(store: Store) -> None:
        web = build_app(
            store=store,
            metrics=Metrics(),
            sinks=lambda: sinks,
            users=settings.http.users,
            webhook_secret=settings.upstream.webhook_secret,
            targets=lambda: settings.alerts.stuck,
            localization=Localization.from_settings(settings.http),
        )
        await serve_until_signalled(web, address)

    with_store(settings, serving)


@app.command("demo")
def demo(
    duration: Annotated[
        float, typer.Option("--duration", help="Stop after this many seconds at the latest.")
    ] = 75.0,
    config: ConfigOption = None,  # noqa: ARG001 - accepted like everywhere; the demo brings its own
) -> None:
    """Everything on the embedded default: simulated upstream, temporary SQLite, local sinks."""
    from tracker.config import LogSettings
    from tracker.demo import run_demo
    from tracker.logs import configure as configure_logs

    configure_logs(LogSettings(format="console", level="warning"), stream=sys.stderr)
    run_async(run_demo(duration=duration, console=out))


def main() -> None:
    """Console entry point: maps tracker errors to one line and an exit code."""
    try:
        app()
    except ConfigError as exc:
        _fail(str(exc), 2)
    except TrackerError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 1)
    except Exception as exc:
        # Only a command that loaded the store can have raised the database's errors.
        store = sys.modules.get("tracker.store")
        described = store.describe_failure(exc) if store is not None else None
        if described is None:
            raise
        _fail(described, 1)


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"tracker: error: {message.splitlines()[0] if message else 'failed'}\n")
    sys.exit(code)
