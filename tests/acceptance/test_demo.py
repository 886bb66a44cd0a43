"""`tracker demo` as a newcomer runs it: the story on stdout, the listener's URLs live meanwhile."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT

#: ``  metrics:   http://127.0.0.1:PORT/metrics`` and its siblings, as the demo prints them.
URL_LINE = re.compile(r"^\s+(board|health|readiness|metrics):\s+(http://127\.0\.0\.1:\d+/\w*)\s*$")
#: The closing line counting the simulator's requests by kind.
KINDS_LINE = re.compile(
    r"upstream requests by kind: (\d+) list pages \((\d+) orders in them\), (\d+) by-id"
)
#: Seconds the demo runs: a few rounds of polls at its 2 s interval, and gauges read twice.
DURATION = 20
#: The simulator's orders (``tracker.demo.simulator.demo_scripts``).
ORDERS = 12


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a ``/metrics`` answer, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_the_demo_prints_live_urls_of_health_and_metrics_that_move() -> None:
    """The demo prints health, readiness and metrics URLs that answer, with counts that move."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "demo",
        "--duration",
        str(DURATION),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"},
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = asyncio.create_task(process.stderr.read())
    printed: list[str] = []
    urls: dict[str, str] = {}
    try:
        while len(urls) < 4:
            line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            assert line, f"the demo ended before printing its URLs: {printed}"
            printed.append(line)
            if found := URL_LINE.match(line):
                urls[found[1]] = found[2]
        assert urls["board"] + "healthz" == urls["health"]
        assert urls["health"].endswith("/healthz")
        assert urls["readiness"].endswith("/readyz")
        assert urls["metrics"].endswith("/metrics")
        rest = asyncio.create_task(process.stdout.read())
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            health = await client.get(urls["health"])
            for _ in range(40):  # ready once the scheduler ticked and the database answered
                ready = await client.get(urls["readiness"])
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.25)
            # The numbers move: polls are counted and, once the gauges' cache (5 s) expires,
            # the orders leave "none" (not answered yet) for their statuses.
            for _ in range(60):
                scraped = samples((await client.get(urls["metrics"])).text)
                watched = {
                    dict(labels)["status"]: value
                    for (name, labels), value in scraped.items()
                    if name == "tracker_watched_orders"
                }
                if watched.get("none", 0) < ORDERS:
                    break
                await asyncio.sleep(0.25)
        out = (await asyncio.wait_for(rest, DURATION + 30)).decode()
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err = (await stderr).decode()
    assert code == 0, err
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert scraped[("tracker_polls_total", (("result", "changed"),))] > 0
    assert scraped[("tracker_upstream_requests_total", (("code", "200"),))] > 0
    assert ("tracker_outbox_pending", (("sink", "ops"),)) in scraped
    assert ("tracker_outbox_pending", (("sink", "support"),)) in scraped
    assert sum(watched.values()) == ORDERS
    assert watched.get("none", 0) < ORDERS
    assert "Where each order stands" in out
    table = out[out.index("Where each order stands") :].split("polls,")[0]
    assert "…" not in table  # ids and statuses whole, as in every CLI table
    assert "webhooks received with verified signatures" in out
    kinds = KINDS_LINE.search(out)
    assert kinds is not None, out
    _list_pages, _listed, by_id = map(int, kinds.groups())
    assert by_id > 0
