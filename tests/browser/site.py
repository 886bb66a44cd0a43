"""A realistic tracker for the browser: seeded through the real poller and outbox, served from a
thread of its own (Selenium's calls block, the server must not wait for them).

A dozen orders polled over twelve days (the wall clock moved with time-machine): one through
five statuses with a webhook and an e-mail for each transition and one refused webhook attempt,
others blocked, cancelled, activated, one in an undocumented status, one failing, and dead
letters at a sink that is down. Also used by ``benchmarks/screenshot_order_page.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import time_machine

from tests.outbox import FAST, Mailbox, hook_sink, poll, smtp_server
from tests.support import HookReceiver, ScriptedUpstream, error, ok, settings_mapping
from tracker.clock import utc_now
from tracker.config import Address, Settings, from_mapping
from tracker.demo.serving import catch_all, serve
from tracker.service import Service, open_outbox, open_service
from tracker.web import Metrics, build_app, listening
from tracker.web.i18n import Localization

T = TypeVar("T")

READ_TOKEN = "support-read-token-5c1e9a7d3b"
WRITE_TOKEN = "support-write-token-8f2b6d4a0c"
USERS = [
    {"name": "support-ui", "token": READ_TOKEN, "role": "read"},
    {"name": "ops-lead", "token": WRITE_TOKEN, "role": "write"},
]
#: The order the screenshots show: five statuses, webhook and e-mail deliveries.
SHOWN = "prdo_x83bmixgdcktlpxli778vvgo"
#: A port nothing listens on: the ``legacy-erp`` sink is down, its deliveries die.
NOWHERE = "http://127.0.0.1:9/orders"
#: Delivery settings under which a failed attempt waits: the next is 45 minutes later.
SLOW = {"backoff": ["45m", "2h"], "timeout": 1}
#: Seconds the thread may take to seed and start serving.
START_LIMIT = 90.0


@dataclass(frozen=True, slots=True)
class Step:
    """What one order answers at ``days`` before now (negative), and with which changes."""

    days: float
    status: str
    changes: dict[str, Any] = field(default_factory=dict)


def _customer(n: int) -> dict[str, str]:
    return {
        "customer": f"cus_{n:02d}k3zcrkc9r41qt44ngl9d",
        "subscription": f"sub_{n:02d}yqxohw546im28zwyhn",
    }


#: Each order's answers, oldest first.
SCRIPTS: dict[str, list[Step]] = {
    SHOWN: [
        Step(-12, "waiting", _customer(1)),
        Step(-9.6, "ordered", _customer(1)),
        Step(-6.2, "checked", _customer(1)),
        Step(-4.1, "installation_planning", _customer(1)),
        Step(-3.0, "installation_planning", _customer(1) | {"updated_at": "2026-11-27T09:12:00Z"}),
        Step(-0.01, "installation_scheduled", _customer(1)),
    ],
    "prdo_b2kq7wzt0c9m4xr1np6sd3fh": [
        Step(-12, "ordered", _customer(2)),
        Step(-4.1, "checked", _customer(2)),
    ],
    "prdo_c5nv8ye2ha0t6kq3wz1rm7bx": [
        Step(-12, "checked", _customer(3)),
        Step(-5.5, "blocked_wim", _customer(3)),
    ],
    "prdo_d1gx4pm9sk2w7hb0qz5tn8ce": [
        Step(-12, "installation_finished", _customer(4)),
        Step(-3.0, "installed", _customer(4)),
        Step(-0.3, "activated", _customer(4)),
    ],
    "prdo_e7tw3bn0qx5k9cz2mh6pr1sv": [
        Step(-12, "ordered", _customer(5)),
        Step(-0.3, "cancelled", _customer(5)),
    ],
    "prdo_f4hs9cx1mz6p0wk3tq7nb2dy": [
        Step(-12, "waiting", _customer(6)),
        Step(-3.0, "on_hold_by_provider", _customer(6)),
    ],
    "prdo_g8pm2dv5tx1q7cn4wz0hk3rb": [Step(-12, "waiting", _customer(7))],
    "prdo_h3qz6wk0mb9t2xv5pn8cd1sg": [Step(-12, "installation_scheduled", _customer(8))],
}
#: An order whose polls fail: the provider answers 503.
FAILING = "prdo_k9zt1mb6wq3x0pc7nd4hs2vy"


@dataclass
class Site:
    """The pages over a seeded SQLite store, served from a thread until :meth:`stop`."""

    folder: Path
    #: ``[http] timezone``: the zone the pages show times in.
    timezone: str = "UTC"
    url: str = ""
    service: Service | None = None
    #: The upstream's scripts: a test may give an order a new answer and poll it.
    scripted: ScriptedUpstream | None = None
    mailbox: Mailbox = field(default_factory=Mailbox)
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _failed: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Site:
        """Seed and serve; returns when the pages answer (or raises what stopped them)."""
        self._thread = threading.Thread(target=self._run, name="pages-site", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_LIMIT):
            raise RuntimeError(f"the site did not start within {START_LIMIT} s")
        if self._failed is not None:
            raise RuntimeError("the site failed to start") from self._failed
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def run(self, work: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        """Run ``work`` on the site's loop (its store lives there) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_await(work), self._loop).result(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the starting thread, which raises it
            self._failed = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        scripted = ScriptedUpstream()
        crm = HookReceiver()
        async with (
            serve(catch_all(scripted)) as upstream,
            serve(catch_all(crm)) as hooks,
            smtp_server(self.mailbox) as port,
        ):
            mapping = settings_mapping(
                self.folder,
                upstream.url,
                delivery=FAST,
                smtp={"host": "127.0.0.1", "port": port},
                sinks=[
                    hook_sink("crm-webhook", hooks.url + "/meter-orders", ["*"]),
                    {
                        "name": "support-mail",
                        "type": "email",
                        "to": ["support@example.com"],
                        "on": ["*->checked", "*->installation_scheduled", "*->cancelled"],
                    },
                    hook_sink("legacy-erp", NOWHERE, ["*->cancelled", "*->blocked_wim"]),
                ],
                database={"url": f"sqlite:///{self.folder / 'site.db'}"},
                http={"listen": "127.0.0.1:0", "users": USERS, "timezone": self.timezone},
            )
            settings = from_mapping(mapping, {}, origin="browser-site")
            # The last transition's webhook fails and waits for its next attempt.
            patient = from_mapping(mapping | {"delivery": SLOW}, {}, origin="browser-site")
            async with open_service(settings) as service:
                await seed(service, scripted, crm, patient)
                app = build_app(
                    store=service.store,
                    metrics=Metrics(),
                    sinks=lambda: [s.name for s in settings.sinks],
                    users=settings.http.users,
                    localization=Localization.from_settings(settings.http),
                )
                async with listening(app, Address("127.0.0.1", 0)) as url:
                    self.url, self.service, self.scripted = url, service, scripted
                    self._ready.set()
                    await self._stop.wait()


async def deliver(service: Service, settings: Settings, seconds: float) -> None:
    """Send what is due with a dispatcher of its own (one stopped cannot start again), until
    nothing is pending or ``seconds`` pass."""
    async with open_outbox(settings, service.store) as dispatcher:
        dispatcher.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while loop.time() < deadline:
                await dispatcher.tick()
                await asyncio.sleep(0.05)
                if not [d async for d in service.store.outbox.deliveries(state="pending")]:
                    break
        finally:
            await dispatcher.stop(1.0)


async def _await(work: Awaitable[T]) -> T:
    return await work


async def seed(
    service: Service, scripted: ScriptedUpstream, crm: HookReceiver, patient: Settings
) -> None:
    """Poll every order at its steps' times (the clock moved there), delivering as it goes.

    The CRM fails the first delivery of the shown order's ``checked`` (500), so that one
    delivery took two attempts, and the first of its last transition, which waits (with
    ``patient`` settings) for its next attempt; ``legacy-erp`` is down: its deliveries are
    dead letters.
    """
    now = utc_now().replace(microsecond=0)
    for order_id, steps in SCRIPTS.items():
        scripted.script(order_id, *(ok(step.status, **step.changes) for step in steps))
    scripted.script(FAILING, ok("ordered", **_customer(9)), error(503))
    days = sorted({step.days for steps in SCRIPTS.values() for step in steps})
    start = now + timedelta(days=days[0], minutes=-5)
    with time_machine.travel(start, tick=True):
        await service.store.orders.watch([*SCRIPTS, FAILING], source="cli", now=utc_now())
    for day in days:
        due = [o for o, steps in SCRIPTS.items() if any(s.days == day for s in steps)]
        if day == days[0]:
            due.append(FAILING)
        if day == -0.3:
            due.append(FAILING)
        at = now + timedelta(days=day)
        if day == -6.2:
            crm.answers = [500, 204]
        last = day == days[-1]
        if last:
            crm.answers = [500]
        with time_machine.travel(at, tick=True):
            await poll(service, *due)
            await deliver(service, patient if last else service.settings, 1.0 if last else 3.0)
    with time_machine.travel(now - timedelta(minutes=7), tick=True):
        await poll(service, FAILING)
