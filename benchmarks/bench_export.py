"""Export benchmark: rows per second and peak memory of ``tracker export``, as a user runs it.

It builds SQLite databases with the real schema (``tracker db upgrade``) and fills them in
bulk with ``sqlite3``, as the tracker would have written them: watched orders, one packed
snapshot per order (``tracker.store.packing.pack_body``; every transition of the order refers to
it, as the export never reads snapshots), transitions along the lifecycle with a webhook payload
of the usual size, and one or two deliveries per transition in every state.
Then it runs ``tracker export --since 2000-01-01 --format csv|ndjson > /dev/null`` in child
processes reaped with ``os.wait4`` (wall time, CPU, peak RSS), on the full database and on one
a tenth of its size, plus an export of an empty range as the command's own baseline: the peak
memory should stay flat while the rows grow tenfold.

    .venv/bin/python benchmarks/bench_export.py [--rows 1000000] [--small 100000] [--keep]

It is not part of the tests.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tracker.lifecycle import MAIN_PATH
from tracker.store.packing import pack_body

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (``make bench``), not with ``-m``
    sys.path.insert(0, str(ROOT))

from benchmarks.common import tracker_executable  # noqa: E402 - needs the root on the path

MIB = 1024 * 1024
#: Transitions per watched order: a meter order lives through about ten statuses.
PER_ORDER = 10
#: Rows per ``executemany``.
CHUNK = 20_000
#: The transitions spread over this period, oldest first (with a little disorder).
SPAN = timedelta(days=365)
START = datetime(2025, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one child process cost: wall seconds, CPU seconds (user + sys), peak RSS in bytes."""

    wall: float
    cpu: float
    peak_rss: int


def measured(argv: Sequence[str]) -> Usage:
    """Run ``argv`` with stdout to /dev/null; its own wall time, CPU and peak RSS."""
    with Path(os.devnull).open("wb") as sink, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=sink, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}:\n{tail}")
    # ru_maxrss is in KiB on Linux.
    return Usage(wall=wall, cpu=usage.ru_utime + usage.ru_stime, peak_rss=usage.ru_maxrss * 1024)


def write_config(folder: Path) -> Path:
    """A ``tracker.toml`` on a SQLite file in ``folder``; the upstream is never asked."""
    config = folder / "tracker.toml"
    config.write_text(
        f"""[upstream]
base_url = "http://127.0.0.1:9"
token = "nom_bench_token"

[database]
url = "sqlite:///{folder / "tracker.db"}"

[log]
level = "warning"
""",
        encoding="utf-8",
    )
    return config


def micros(moment: datetime) -> int:
    """How SQLite stores a time: integer microseconds since the epoch."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def order_id(number: int) -> str:
    """A documented-looking order id: ``prdo_`` + 24 lower-case letters and digits."""
    return f"prdo_{number:024d}"


def order_body(oid: str, status: str) -> str:
    """An upstream answer of the usual shape and size."""
    return json.dumps(
        {
            "object": "meter_order",
            "id": oid,
            "subscription": "sub_vzyqxohw546im28zwyhn04ei",
            "customer": "cus_qacki3zcrkc9r41qt44ngl9d",
            "provider": "energy-metering",
            "status": status,
            "created_at": "2024-03-14T12:00:00Z",
            "updated_at": "2025-06-01T08:30:00Z",
        }
    )


def event_id(number: int) -> str:
    """``evt_`` + 24 lower-case base32 characters, like ``tracker.poller.new_event_id``."""
    return "evt_" + base64.b32encode(number.to_bytes(15, "big")).decode().lower()


def _chunks(rows: Iterator[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    chunk: list[tuple[object, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _orders(count: int) -> Iterator[tuple[object, ...]]:
    now = micros(START + SPAN)
    final = MAIN_PATH[-1].value
    for number in range(count):
        yield (order_id(number), True, "cli", micros(START), final, now, now, now, now, 0)


def _snapshots(count: int) -> Iterator[tuple[object, ...]]:
    now = micros(START + SPAN)
    final = MAIN_PATH[-1].value
    for number in range(count):
        oid = order_id(number)
        yield (number + 1, oid, now, pack_body(order_body(oid, final)))


def _transitions(rows: int, orders: int) -> Iterator[tuple[object, ...]]:
    step = SPAN / rows
    for number in range(rows):
        oid_number = number % orders
        oid = order_id(oid_number)
        index = (number // orders) % (len(MAIN_PATH) - 1)
        source, target = MAIN_PATH[index].value, MAIN_PATH[index + 1].value
        # Mostly in id order, as polls write them, with neighbours a little out of order.
        detected = micros(START + step * number) + (number % 7) * 1000
        evt = event_id(number)
        payload = json.dumps(
            {
                "type": "meter_order.status_changed",
                "timestamp": "2025-06-01T08:30:00.000000Z",
                "data": {
                    "event_id": evt,
                    "order_id": oid,
                    "from_status": source,
                    "to_status": target,
                    "detected_at": "2025-06-01T08:30:00.000000Z",
                    "order": json.loads(order_body(oid, target)),
                },
            }
        )
        yield (
            number + 1,
            evt,
            oid,
            source,
            target,
            "advance",
            "",
            detected,
            oid_number + 1,
            payload,
        )


def _deliveries(rows: int) -> Iterator[tuple[object, ...]]:
    now = micros(START + SPAN)
    for number in range(rows):
        evt = event_id(number)
        yield (evt, "ops", "delivered", 1, now, now, now, 204, now)
        if number % 3 == 0:  # the support sink takes a third of the events
            state = ("delivered", "pending", "dead")[number % 9 // 3]
            yield (evt, "support", state, 2, now, now, now, 500, None)


def fill(database: Path, rows: int) -> None:
    """Write ``rows`` transitions and everything they refer to, in one transaction."""
    orders = max(rows // PER_ORDER, 1)
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("BEGIN")
        statements = (
            (
                "INSERT INTO watched_orders (order_id, active, source, added_at, status, "
                "next_poll_at, last_polled_at, last_success_at, last_change_at, "
                "consecutive_failures) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _orders(orders),
            ),
            (
                "INSERT INTO snapshots (id, order_id, observed_at, body) VALUES (?, ?, ?, ?)",
                _snapshots(orders),
            ),
            (
                "INSERT INTO transitions (id, event_id, order_id, from_status, to_status, kind, "
                "skipped, detected_at, snapshot_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _transitions(rows, orders),
            ),
            (
                "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, "
                "next_attempt_at, last_attempt_at, last_status, delivered_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _deliveries(rows),
            ),
        )
        for statement, values in statements:
            for chunk in _chunks(values):
                connection.executemany(statement, chunk)
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def prepared(folder: Path, rows: int) -> Path:
    """A migrated database in ``folder`` holding ``rows`` transitions; returns its config."""
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder)
    measured([tracker_executable(), "db", "upgrade", "--config", str(config)])
    started = time.perf_counter()
    # Filled in a process of its own: a child's peak RSS starts from its parent's size at fork
    # (Linux counts the parent's pages it was forked with), so this process must stay small.
    filler = multiprocessing.get_context("spawn").Process(
        target=fill, args=(folder / "tracker.db", rows)
    )
    filler.start()
    filler.join()
    if filler.exitcode != 0:
        raise RuntimeError(f"filling {folder} failed with exit code {filler.exitcode}")
    size = (folder / "tracker.db").stat().st_size
    print(
        f"filled {rows:,} transitions in {time.perf_counter() - started:.1f} s "
        f"({size / MIB:,.0f} MiB on disk)"
    )
    return config


def export(config: Path, fmt: str, since: str = "2000-01-01") -> Usage:
    """``tracker export --since SINCE --format FMT > /dev/null``."""
    argv = [tracker_executable(), "export", "--since", since, "--format", fmt]
    return measured([*argv, "--config", str(config)])


def main() -> None:
    """Fill, export, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="transitions in the big one")
    parser.add_argument("--small", type=int, default=None, help="in the small one (rows / 10)")
    parser.add_argument("--keep", action="store_true", help="keep the databases, print where")
    options = parser.parse_args()
    sizes = sorted({options.small or max(options.rows // 10, 1), options.rows})
    folder = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        configs = {rows: prepared(folder / str(rows), rows) for rows in sizes}
        results: list[tuple[str, int, str, Usage]] = []
        smallest = configs[sizes[0]]
        for fmt in ("csv", "ndjson"):
            results.append(("empty range", 0, fmt, export(smallest, fmt, since="2100-01-01")))
            results.extend(
                (f"{rows:,} rows", rows, fmt, export(configs[rows], fmt)) for rows in sizes
            )
        print()
        print(
            f"{'database':<18}{'format':<8}{'wall s':>8}{'CPU s':>8}{'rows/s':>10}"
            f"{'net rows/s':>12}{'rows/CPU s':>12}{'peak RSS':>12}"
        )
        baseline = {fmt: usage.wall for label, _, fmt, usage in results if label == "empty range"}
        for label, rows, fmt, usage in results:
            rate = f"{rows / usage.wall:,.0f}" if rows else "-"
            net = f"{rows / (usage.wall - baseline[fmt]):,.0f}" if rows else "-"
            per_cpu = f"{rows / usage.cpu:,.0f}" if rows else "-"
            print(
                f"{label:<18}{fmt:<8}{usage.wall:>8.2f}{usage.cpu:>8.2f}{rate:>10}{net:>12}"
                f"{per_cpu:>12}{usage.peak_rss / MIB:>8.1f} MiB"
            )
        print(
            "\nrows/s counts the whole command (start-up included); net rows/s leaves out the "
            "empty range's time; rows/CPU s holds on a busy machine, where wall time does not."
        )
    finally:
        if options.keep:
            print(f"\ndatabases kept in {folder}")
        else:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
