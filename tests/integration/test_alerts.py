"""Alerts through the outbox: an order stuck in its status, one whose polls keep failing, and
its recovery; each raised once, routed only to the sinks that name its kind."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.outbox import (
    FAST,
    Mailbox,
    deliver_all,
    hook_sink,
    poll,
    smtp_server,
)
from tests.support import HookReceiver, ScriptedUpstream, error, make_settings, ok
from tracker import alerts
from tracker.clock import utc_now
from tracker.demo.serving import catch_all, serve
from tracker.service import open_service
from tracker.web import Metrics

#: Every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.usefixtures("database")

A = "prdo_aaaaaaaaaaaaaaaaaaaaaaaa"
B = "prdo_bbbbbbbbbbbbbbbbbbbbbbbb"
Upstream = tuple[ScriptedUpstream, str]
#: Limits for a step to happen at all; missing one fails the test, it times nothing.
PATIENCE = 60.0
#: The peers answer at once; their timeouts only bound a hang, as a loaded machine may take
#: more than the suite's usual second to carry an answer, and no test here is about a timeout.
UPSTREAM = {"timeout": 10}
DELIVERY = FAST | {"timeout": 10}


def bodies(receiver: HookReceiver) -> list[dict[str, Any]]:
    assert all(hook.verified for hook in receiver.hooks)
    return [json.loads(hook.body) for hook in receiver.accepted]


class TestFailingOrders:
    """``failing_after`` failed polls in a row raise one alert; the next success one more."""

    async def test_failing_then_recovered(self, upstream: Upstream, tmp_path: Path) -> None:
        """A failure streak raises one poll_failing by hook and mail, a success a poll_recovered."""
        scripted, url = upstream
        refused = error(503)
        scripted.script(A, ok("ordered"), refused, refused, refused, ok("ordered"), ok("ordered"))
        alerts, everything, mailbox = HookReceiver(), HookReceiver(), Mailbox()
        async with (
            serve(catch_all(alerts)) as alerts_url,
            serve(catch_all(everything)) as all_url,
            smtp_server(mailbox) as port,
        ):
            settings = make_settings(
                tmp_path,
                url,
                upstream=UPSTREAM,
                delivery=DELIVERY,
                alerts={"failing_after": 2},
                smtp={"host": "127.0.0.1", "port": port},
                sinks=[
                    hook_sink("alerts", alerts_url.url, ["poll_failing", "poll_recovered"]),
                    hook_sink("all", all_url.url, ["*"]),
                    {"name": "mail", "type": "email", "to": ["ops@example.com"],
                     "on": ["poll_failing"]},
                ],
            )  # fmt: skip
            async with open_service(settings) as service:
                await service.store.orders.watch([A], source="cli", now=utc_now())
                for _ in range(6):
                    await poll(service, A)
                await deliver_all(service, PATIENCE)
        failing, recovered = bodies(alerts)
        assert failing["type"] == "meter_order.poll_failing"
        assert failing["data"]["order_id"] == A
        assert failing["data"]["failures"] == 2  # once, when the streak reached 2, not at 3
        assert failing["data"]["status"] == "ordered"
        assert failing["data"]["last_error_kind"]
        assert failing["timestamp"].endswith("Z")
        assert recovered["type"] == "meter_order.poll_recovered"
        assert recovered["data"]["failures"] == 3
        assert {failing["data"]["event_id"], recovered["data"]["event_id"]} == {
            hook.event_id for hook in alerts.accepted
        }
        assert everything.hooks == []  # "*" means transitions, not alerts
        [mail] = mailbox.messages
        assert mail["Subject"] == f"{A}: cannot be polled (2 failures in a row)"
        text = mail.get_body(("plain",))
        assert text is not None
        assert "could not be polled 2 times in a row" in text.get_content()


class TestStuckOrders:
    """A stay longer than its threshold is reported once, across a restart."""

    async def test_stuck_once_per_stay(self, upstream: Upstream, tmp_path: Path) -> None:
        """An order stuck past its threshold is reported once to stuck routes, across restarts."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"))
        scripted.script(B, ok("checked"))
        exact, any_status, everything = HookReceiver(), HookReceiver(), HookReceiver()
        async with (
            serve(catch_all(exact)) as exact_url,
            serve(catch_all(any_status)) as any_url,
            serve(catch_all(everything)) as all_url,
        ):
            settings = make_settings(
                tmp_path,
                url,
                upstream=UPSTREAM,
                delivery=DELIVERY,
                polling={"interval": 3600},
                alerts={"stuck": {"ordered": "1s", "checked": "1h"}},
                sinks=[
                    hook_sink("exact", exact_url.url, ["stuck:ordered"]),
                    hook_sink("any", any_url.url, ["stuck:*"]),
                    hook_sink("all", all_url.url, ["*"]),
                ],
            )
            async with open_service(settings) as service:
                await service.store.orders.watch([A, B], source="cli", now=utc_now())
                await poll(service, A, B)
            await asyncio.sleep(1.1)  # A's stay in ordered is now longer than its threshold
            for _restart in range(2):
                async with open_service(settings) as service:
                    stop = asyncio.Event()
                    running = asyncio.create_task(service.daemon().run(stop))
                    try:
                        # The check runs as the daemon starts (then every STUCK_CHECK).
                        async with asyncio.timeout(PATIENCE):
                            while not any_status.accepted:  # noqa: ASYNC110 - a server's list
                                await asyncio.sleep(0.1)
                        await asyncio.sleep(1.0)  # a second raise would be sent by now
                    finally:
                        stop.set()
                        await asyncio.wait_for(running, PATIENCE)
            order = await service.store.orders.get(A)
            async with open_service(settings) as service:
                metrics = Metrics(cache=0)
                await metrics.refresh(service.store, ())
                served = metrics.render().decode()
        assert order is not None
        assert 'tracker_stuck_orders{status="ordered"} 1.0' in served  # A's stay, until it ends
        assert 'tracker_stuck_orders{status="checked"} 0.0' in served
        [stuck] = bodies(any_status)
        assert bodies(exact) == [stuck]
        assert everything.hooks == []
        assert stuck["type"] == "meter_order.stuck"
        data = stuck["data"]
        assert (data["order_id"], data["status"], data["threshold"]) == (A, "ordered", "PT1S")
        assert data["since"] <= stuck["timestamp"]
        assert data["event_id"] == any_status.accepted[0].event_id

    async def test_a_new_stay_is_a_new_report(self, upstream: Upstream, tmp_path: Path) -> None:
        """A stay is reported once past its threshold, even by two daemons; a new stay anew."""
        scripted, url = upstream
        scripted.script(A, ok("ordered"), ok("checked"), ok("ordered"))
        threshold = {"ordered": timedelta(hours=1)}
        settings = make_settings(tmp_path, url, upstream=UPSTREAM)
        async with open_service(settings) as service:
            store = service.store
            await store.orders.watch([A], source="cli", now=utc_now())

            async def report(later: timedelta) -> list[datetime]:
                now = utc_now() + later
                stays = await store.events.stuck(threshold, now=now, limit=10)
                made = [
                    (s, alerts.stuck(order_id=s.order_id, status=s.status, since=s.since,
                                     threshold=timedelta(hours=1), now=now, routes={}))
                    for s in stays
                ]  # fmt: skip
                # Two daemons report the same stays at once: one report each, not two.
                first, second = (
                    await store.events.report_stuck(made),
                    await store.events.report_stuck(made),
                )
                assert second == []
                return [stay.since for stay, event in made if event in first]

            await poll(service, A)
            assert await report(timedelta(minutes=59)) == []
            [first_stay] = await report(timedelta(hours=2))
            assert await report(timedelta(hours=3)) == []  # this stay is reported
            await poll(service, A)  # checked: the stay ends
            await poll(service, A)  # ordered again: a new stay
            [second_stay] = await report(timedelta(hours=2))
            assert second_stay > first_stay
