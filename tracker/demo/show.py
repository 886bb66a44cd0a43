"""``tracker demo``: the simulator, a temporary SQLite database and the daemon, shown live.

The daemon serves its HTTP listener on a free loopback port, as ``tracker run`` does with
``[http] listen``: the printed URLs show the support board, health, readiness and metrics move
while it runs. The end summary counts the simulator's requests by kind (list pages and by-id
requests), so what list sweeps save shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from tracker.config import Address, Settings
from tracker.demo.hints import HintTarget
from tracker.demo.receivers import MailCatcher, WebhookReceiver, start_mail_catcher
from tracker.demo.serving import serve
from tracker.demo.simulator import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Simulator, demo_scripts
from tracker.model import Transition
from tracker.service import open_service
from tracker.views import Column, show
from tracker.web import Metrics, build_app, listening

#: Seconds each simulated status lasts, before per-order staggering.
STEP_SECONDS = 5.0
_STYLE = {
    "advance": "green",
    "skip_ahead": "green",
    "complete": "bold green",
    "cancel": "red",
    "block": "yellow",
    "unblock": "cyan",
    "regress": "magenta",
}


DEMO_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"tracker-demo-signing-key").decode()
#: Signs the simulator's push hints, as the provider signs its webhooks.
DEMO_HINT_SECRET = "demo-hint-signing-secret"  # noqa: S105 - the demo's own throwaway secret
#: Where the demo's listener binds: loopback, on a port the system picks (printed at start).
DEMO_LISTEN = Address(host="127.0.0.1", port=0)
#: The listener's routes the demo points at, each with what it shows.
DEMO_ROUTES = (
    ("board", "/"),
    ("health", "/healthz"),
    ("readiness", "/readyz"),
    ("metrics", "/metrics"),
)


def listener_lines(base_url: str) -> list[str]:
    """One ``NAME: URL`` line per route of :data:`DEMO_ROUTES`, names aligned."""
    width = max(len(name) for name, _path in DEMO_ROUTES) + 1
    return [f"{name + ':':<{width}} {base_url}{path}" for name, path in DEMO_ROUTES]


def demo_settings(  # noqa: PLR0917 - the demo's parts, each named
    base_url: str,
    database: Path,
    order_ids: list[str],
    webhook_url: str,
    smtp_port: int,
    board_token: str,
) -> Settings:
    """The embedded default: OAuth against the simulator, fast polling, the real budget, push
    hints, and one support user (``demo``, with ``board_token``) for the pages."""
    return Settings.model_validate(
        {
            "upstream": {
                "base_url": base_url,
                "client_id": DEMO_CLIENT_ID,
                "client_secret": DEMO_CLIENT_SECRET,
                "requests_per_second": 8,
                "max_concurrency": 4,
                "timeout": 5,
                "webhook_secret": DEMO_HINT_SECRET,
            },
            "http": {"users": [{"name": "demo", "token": board_token, "role": "write"}]},
            "database": {"url": f"sqlite:///{database}"},
            "polling": {"interval": 2, "jitter": 0.3, "final_grace": 6},
            "watch": {"orders": order_ids},
            "delivery": {"backoff": ["1s", "2s", "5s"], "timeout": 5},
            "smtp": {
                "host": "127.0.0.1",
                "port": smtp_port,
                "from": "Tracker demo <demo@localhost>",
            },
            "sinks": [
                {
                    "name": "ops",
                    "type": "webhook",
                    "url": webhook_url,
                    "secret": DEMO_WEBHOOK_SECRET,
                    "on": ["*"],
                },
                {
                    "name": "support",
                    "type": "email",
                    "to": ["support@example.com"],
                    "on": ["*->blocked", "*->blocked_wim", "*->cancelled"],
                },
            ],
        }
    )


async def run_demo(*, duration: float, console: Console) -> None:
    """Run the demo until every simulated order has finished its script, or ``duration``."""
    scripts = demo_scripts(STEP_SECONDS)
    simulator = Simulator(scripts, rate_limit=10)
    script_end = max(sum(d for _s, d in script.steps[:-1]) for script in scripts)
    live = _Live(console)
    receiver = WebhookReceiver(DEMO_WEBHOOK_SECRET, live.receiver_says, fail_first=1)
    catcher = MailCatcher(live.receiver_says)
    mail_server, smtp_port = await start_mail_catcher(catcher)
    with tempfile.TemporaryDirectory(prefix="tracker-demo-") as folder:
        async with serve(simulator.app) as server, serve(receiver.app) as hooks:
            board_token = secrets.token_urlsafe(18)
            settings = demo_settings(
                server.url,
                Path(folder) / "demo.db",
                simulator.order_ids,
                hooks.url,
                smtp_port,
                board_token,
            )
            console.print(
                f"[bold]tracker demo[/bold]: {len(scripts)} simulated orders at {server.url}, "
                f"polled every 2 s within 8 requests/s.\nSinks: webhook [bold]ops[/bold] "
                f"(every transition, signed, to {hooks.url}) and e-mail [bold]support[/bold] "
                f"(blocked and cancelled, to a local SMTP catcher on port {smtp_port}).\n"
                "Ctrl-C ends it early.\n"
            )
            end = await _run_daemon(
                settings, simulator, live, board_token, until=min(duration, script_end + 6)
            )
    mail_server.close()
    await mail_server.wait_closed()
    _summary(console, simulator, end.statuses, live.seen, end.counts, end.polls)
    console.print(
        f"deliveries: {len(receiver.received)} webhooks received with verified signatures, "
        f"{len(catcher.messages)} mails caught; outbox: "
        + ", ".join(f"{n} {state}" for state, n in sorted(end.states.items()))
    )


@dataclass(slots=True)
class _Live:
    """What the demo prints as it happens: each transition, and what the receivers got."""

    console: Console
    started: float = field(default_factory=time.monotonic)
    #: The transitions shown, for the summary at the end.
    seen: list[Transition] = field(default_factory=list)

    def elapsed(self) -> str:
        """Seconds since the demo started, dimmed."""
        return f"[dim]{time.monotonic() - self.started:5.1f}s[/dim]"

    def receiver_says(self, text: str) -> None:
        """One line of what a receiver (webhook or mail) got."""
        self.console.print(f"{self.elapsed()}      [cyan]↳ {escape(text)}[/cyan]")

    def show(self, transition: Transition) -> None:
        """One line per transition, its new status coloured by its kind."""
        self.seen.append(transition)
        style = _STYLE.get(transition.kind, "white")
        self.console.print(
            f"{self.elapsed()}  {transition.order_id}  "
            f"{transition.from_status} → [{style}]{transition.to_status}[/{style}]  "
            f"[dim]({transition.kind})[/dim]"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _End:
    """Where the demo's database stands when the daemon has stopped."""

    statuses: dict[str, str | None]
    counts: dict[str, int]
    #: Deliveries by state.
    states: Counter[str]
    polls: int


async def _run_daemon(
    settings: Settings, simulator: Simulator, live: _Live, board_token: str, *, until: float
) -> _End:
    """Run the daemon with its HTTP listener until ``until`` seconds pass or a signal comes."""
    metrics = Metrics()
    sinks = [sink.name for sink in settings.sinks]
    async with open_service(settings, telemetry=metrics) as service:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(until, stop.set)
        daemon = service.daemon(on_transition=live.show)
        web = build_app(
            store=service.store,
            metrics=metrics,
            readiness=daemon.readiness,
            sinks=lambda: sinks,
            users=settings.http.users,
            webhook_secret=settings.upstream.webhook_secret,
        )
        with _stopped_by_signals(stop):
            async with listening(web, DEMO_LISTEN) as base_url:
                _show_listener(live.console, base_url, board_token)
                hints = HintTarget(url=f"{base_url}/hooks/nomos", secret=DEMO_HINT_SECRET)
                async with simulator.hints_running(hints):
                    await daemon.run(stop)
        store = service.store
        return _End(
            statuses={order.order_id: order.status async for order in store.orders.watched()},
            counts=await store.reports.counts(),
            states=Counter([d.state.value async for d in store.outbox.deliveries()]),
            polls=daemon.polls,
        )


@contextlib.contextmanager
def _stopped_by_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` while inside; the handlers go again at the end."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(RuntimeError):
                loop.remove_signal_handler(sig)


def _show_listener(console: Console, base_url: str, board_token: str) -> None:
    console.print(
        "The daemon's HTTP listener (what [bold]tracker run[/bold] serves with "
        f"{escape('[http] listen')}), while the demo runs:"
    )
    for line in listener_lines(base_url):
        console.print(f"  {escape(line)}")
    console.print(
        f"  (log in to the board with the token {escape(board_token)}; the "
        "simulator sends a signed push hint to /hooks/nomos at every change)\n"
    )


def _summary(  # noqa: PLR0917 - one call site; the pieces of the report
    console: Console,
    simulator: Simulator,
    statuses: dict[str, str | None],
    seen: list[Transition],
    counts: dict[str, int],
    polls: int,
) -> None:
    columns = (
        Column("order", whole=True),
        Column("tracked status", whole=True),
        Column("upstream now", whole=True),
    )
    rows = []
    for order_id, status in statuses.items():
        upstream = simulator.status_of(order_id)
        style = "" if status == upstream else "red"  # not caught up: shown apart
        rows.append([Text(order_id, style=style), Text(status or "-", style=style),
                     Text(upstream, style=style)])  # fmt: skip
    console.print()
    show(console, columns, rows, title="Where each order stands")  # ids and statuses whole
    kinds = Counter(t.kind for t in seen)
    stats = simulator.stats
    console.print(
        f"{polls} polls, {stats.requests} upstream requests "
        f"(busiest second: {stats.busiest_second}, 429s: {stats.rate_limited}), "
        f"{counts['snapshots']} snapshots, {counts['transitions']} transitions: "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    )
    console.print(request_kinds(simulator, polls))


def request_kinds(simulator: Simulator, polls: int) -> str:
    """What the simulator was asked, by kind, against one request per poll."""
    stats = simulator.stats
    return (
        f"upstream requests by kind: {stats.list_requests} list pages "
        f"({stats.items_served} orders in them), {stats.id_requests} by-id requests; "
        f"one request per poll would have taken {polls}"
    )
