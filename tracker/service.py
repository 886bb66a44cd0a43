"""The daemon's wiring: polling, the outbox over the configured sinks, and the scheduler."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import structlog

from tracker.app import LEASE_MARGIN, Polling, polling_on
from tracker.clock import utc_now
from tracker.config import Settings, load
from tracker.daemon import Daemon, TransitionListener
from tracker.errors import ConfigError
from tracker.outage import Outage
from tracker.outbox import Dispatcher, window
from tracker.sinks.registry import build_sinks
from tracker.store import Store, open_store
from tracker.telemetry import SILENT, Telemetry

log = structlog.get_logger("tracker.service")

#: Polling counts as stalled when orders wait and no poll was recorded for two request timeouts,
#: one gap of the budget, and this much more (an event loop busy writing a large batch).
STALL_MARGIN = 10.0


def delivery_lease(settings: Settings) -> timedelta:
    """How long a claimed delivery is hidden from other claims: its queue, sent at the slowest."""
    rounds = window(settings.delivery.max_concurrency) // settings.delivery.max_concurrency
    return (rounds + 1) * max(settings.delivery.timeout, settings.smtp.timeout) + LEASE_MARGIN


@asynccontextmanager
async def open_outbox(
    settings: Settings,
    store: Store,
    *,
    outage: Outage | None = None,
    telemetry: Telemetry = SILENT,
) -> AsyncIterator[Dispatcher]:
    """A dispatcher over the configured sinks; their HTTP client is closed afterwards.

    With ``outage`` (in a daemon), a database outage is waited out rather than failing;
    ``telemetry`` hears of every attempt.
    """
    limit = settings.delivery.max_concurrency * max(len(settings.sinks), 1)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.delivery.timeout.total_seconds()),
        limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": "meter-order-tracker", "Accept-Encoding": "identity"},
    )
    try:
        yield Dispatcher(
            store=store,
            sinks=build_sinks(settings, http),
            build=functools.partial(build_sinks, http=http),
            backoff=settings.delivery.backoff,
            clock=utc_now,
            concurrency=settings.delivery.max_concurrency,
            lease=delivery_lease(settings),
            outage=outage,
            telemetry=telemetry,
        )
    finally:
        await http.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class Service(Polling):
    """Polling and the outbox, from which the daemon is made."""

    dispatcher: Dispatcher
    #: The database's reachability, as the daemon and its outbox both see it.
    outage: Outage
    #: Hears of polls, requests, transitions and delivery attempts (the metrics).
    telemetry: Telemetry = SILENT

    def daemon(self, on_transition: TransitionListener | None = None) -> Daemon:
        """A daemon over this store, poller and outbox, sized from the settings."""
        upstream = self.settings.upstream
        # Enough queued work for two seconds at the budget keeps the workers busy between ticks.
        capacity = max(2 * int(upstream.requests_per_second) + upstream.max_concurrency, 4)
        return Daemon(
            store=self.store,
            poller=self.poller,
            clock=utc_now,
            workers=upstream.max_concurrency,
            capacity=min(capacity, 2000),
            lease=self.lease,
            stop_grace=upstream.timeout.total_seconds() + 1,
            stall_after=2 * upstream.timeout.total_seconds()
            + 1 / upstream.requests_per_second
            + STALL_MARGIN,
            on_transition=on_transition,
            dispatcher=self.dispatcher,
            outage=self.outage,
            settings=self.settings,
            telemetry=self.telemetry,
        )


@asynccontextmanager
async def open_service(
    settings: Settings, *, telemetry: Telemetry = SILENT
) -> AsyncIterator[Service]:
    """Polling and the outbox over one store, closed afterwards.

    The sinks are built first: a template that does not compile stops the start before any
    configured order is watched. ``telemetry`` hears of everything the daemon does.
    """
    async with open_store(settings.database.url) as store:
        outage = Outage(store.where)
        async with (
            open_outbox(settings, store, outage=outage, telemetry=telemetry) as dispatcher,
            polling_on(settings, store, telemetry=telemetry) as polling,
        ):
            yield Service(
                settings=settings,
                store=polling.store,
                poller=polling.poller,
                dispatcher=dispatcher,
                outage=outage,
                telemetry=telemetry,
            )


#: Hears of each configuration a reload put in force (the HTTP users, for one).
ReloadListener = Callable[[Settings], None]


class Reloader:
    """SIGHUP for ``tracker run``: the file is read and checked off to the side (settings and
    sinks, templates compiled), then swapped in whole between ticks, and ``listeners`` hear
    of it. A file that does not load is refused with one ``config_reload_failed`` line naming
    the key or the position; the old configuration stays in force.

    Whatever else fails is one ``config_reload_failed`` line naming only the exception's type:
    its message, arguments and traceback may quote the file, and the file holds secrets.
    """

    def __init__(
        self,
        path: Path,
        service: Service,
        daemon: Daemon,
        *,
        listeners: Sequence[ReloadListener] = (),
    ) -> None:
        self._path = path
        self._service = service
        self._daemon = daemon
        self._listeners = tuple(listeners)
        self.settings = service.settings

    async def __call__(self) -> bool:
        """Reload once; whether the new configuration is now in force everywhere."""
        build = self._service.dispatcher.build
        try:
            new = load(self._path)
            sinks = build(new) if build is not None else {}
        except ConfigError as exc:
            return _refused(str(exc))
        except Exception as exc:  # logged by its type alone: see the class docstring
            return _refused(
                f"checking the file failed unexpectedly ({type(exc).__name__}); "
                "the old configuration stays in force"
            )
        old = self.settings
        try:
            await self._daemon.reconfigure(new, sinks)
        except Exception as exc:  # logged by its type alone: see the class docstring
            return _refused(
                f"applying the file failed unexpectedly ({type(exc).__name__}); polling and "
                "delivery may follow it in part: fix the cause and reload again"
            )
        self.settings = new
        failed = [f"a listener ({type(exc).__name__})" for exc in self._tell(new)]
        try:
            added = await self._service.store.orders.watch_from_config(
                new.watch.orders, now=utc_now()
            )
        except Exception as exc:  # logged by its type alone: see the class docstring
            failed.append(f"storing its watched orders ({type(exc).__name__})")
        if failed:
            return _refused(
                f"the new configuration is in force, but {', '.join(failed)} failed: "
                "fix the cause and reload again"
            )
        log.info(
            "config_reloaded",
            sinks=list(sinks),
            watched=len(added),
            restart_needed=_fixed_changes(old, new),
        )
        return True

    def _tell(self, new: Settings) -> list[Exception]:
        """Call every listener, each even when one before it failed; returns the failures."""
        failures: list[Exception] = []
        for listener in self._listeners:
            try:
                listener(new)
            except Exception as exc:  # the others must still hear
                failures.append(exc)
        return failures


def _refused(error: str) -> bool:
    log.error("config_reload_failed", error=error)
    return False


def _fixed_changes(old: Settings, new: Settings) -> list[str]:
    """The changed keys that a running daemon reads only at start."""
    changed = [
        name for name in ("upstream", "database", "log") if getattr(old, name) != getattr(new, name)
    ]
    # The listener is bound once; its users are handed on to whoever listens to reloads.
    if old.http.listen != new.http.listen:
        changed.append("http.listen")
    changed += [
        f"delivery.{key}"
        for key in ("max_concurrency", "timeout")
        if getattr(old.delivery, key) != getattr(new.delivery, key)
    ]
    return changed
