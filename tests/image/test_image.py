"""The Dockerfile as shipped: built with podman, run against the simulator, stopped, read again.

The base (``debian:bookworm-slim``) comes from Debian's mirror when no registry can give it (see
``tests.image.podman``). The daemon runs with the host's network, so that it reaches the simulator
on the host's loopback and serves ``/readyz`` there; its database is a named volume that a second
container reads afterwards. Where podman cannot start containers (the tests inside an
unprivileged container, say) the test fails with one line saying so: it never skips.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.image.podman import (
    Podman,
    Unusable,
    build,
    can_start_containers,
    ensure_base,
    last_line,
    starts_a_container,
)
from tests.support import ROOT

#: The tag the test gives the image it builds.
TAG = "localhost/meter-order-tracker:test"
#: The simulator's static bearer token for this test.
TOKEN = "nom_image_test_token"
#: Seconds per step of the simulator's scripted orders: each moves every 2 to 3 s.
STEP = 2.5
#: The simulator on a free port of the host's loopback, accepting the test's token.
SIMULATOR_ARGS = ("--port", "0", "--step", str(STEP), "--token", TOKEN)
#: How many of the simulator's orders the container watches.
WATCHED = 3
#: What the image must not grow beyond (205 MB when written: 82 MB Debian, 45 MB python3, 78 MB
#: the virtual environment); a guard against a compiler or a cache slipping into the last stage.
MAX_SIZE = 260_000_000
#: Generous waits for what a loaded machine delays; reaching one is a failure, not a verdict.
WAIT = 120.0
#: Where the image keeps its database and reads its configuration.
DATA = "/var/lib/tracker"
CONFIG = "/etc/tracker/tracker.toml"


@dataclass(frozen=True, slots=True)
class Simulator:
    """The simulated upstream in a process of its own on the host's loopback."""

    url: str
    orders: list[str]


@contextmanager
def simulator(folder: Path) -> Iterator[Simulator]:
    """``python -m tracker.demo.simulator`` on a free port, until the block ends."""
    with (folder / "simulator.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tracker.demo.simulator", *SIMULATOR_ARGS],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], WAIT)
            line = process.stdout.readline() if ready else b""
            assert line, "the simulator did not announce its URL"
            announced = json.loads(line)
            yield Simulator(url=announced["url"], orders=announced["orders"])
        finally:
            process.terminate()
            process.wait(30)


def free_port() -> int:
    """A port free on the host's loopback now (the container's listener takes it next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(folder: Path, upstream: str, port: int) -> Path:
    """The mounted configuration: the simulator upstream, SQLite on the volume, fast polling."""
    path = folder / "tracker.toml"
    path.write_text(
        f"""\
[upstream]
base_url = "{upstream}"
token = "{TOKEN}"
timeout = 5

[database]
url = "sqlite:///{DATA}/tracker.db"

[polling]
interval = 2
jitter = 0.3

[http]
listen = "127.0.0.1:{port}"

[log]
format = "json"
""",
        encoding="utf-8",
    )
    path.chmod(0o644)
    return path


def counted(text: str, name: str, **labels: str) -> float:
    """The sum of a ``/metrics`` answer's samples called ``name`` that carry ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


class Container:
    """One detached container of the image, looked at through podman."""

    def __init__(self, podman: Podman, name: str) -> None:
        self.podman = podman
        self.name = name

    def state(self, field: str) -> str:
        """``podman inspect``'s ``.State.FIELD``."""
        return self.podman.ok("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).strip()

    def last_log_line(self) -> str:
        """The last line the container wrote: why it ended, when it did."""
        ran = self.podman("logs", self.name)
        return last_line(ran.stdout + ran.stderr)

    def get(self, url: str) -> httpx.Response | None:
        """``GET url`` from the host; None while nothing answers, a failure once it exited."""
        if self.state("Running") != "true":
            pytest.fail(f"the container ended: {self.last_log_line()}", pytrace=False)
        try:
            return httpx.get(url, timeout=5, trust_env=False)
        except httpx.TransportError:
            return None


def wait_ready(container: Container, base: str) -> None:
    """Until ``/readyz`` answers 200."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        answer = container.get(f"{base}/readyz")
        if answer is not None and answer.status_code == 200:
            return
        time.sleep(0.5)
    pytest.fail(f"/readyz never answered 200: {container.last_log_line()}", pytrace=False)


def wait_polls(container: Container, base: str) -> str:
    """``/metrics`` once a transition was stored."""
    deadline = time.monotonic() + WAIT
    scraped = ""
    while time.monotonic() < deadline:
        answer = container.get(f"{base}/metrics")
        if answer is not None and answer.status_code == 200:
            scraped = answer.text
            if counted(scraped, "tracker_transitions_total") >= 1:
                return scraped
        time.sleep(1)
    polls = counted(scraped, "tracker_polls_total")
    pytest.fail(f"no transition stored in {WAIT:.0f} s ({polls:.0f} polls)", pytrace=False)


def uids(pid: str) -> list[str]:
    """The real, effective, saved and file-system uids of a host process."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]


def test_the_image_runs_polls_reports_healthy_stops_cleanly_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    """The built image polls the simulator unprivileged, is healthy, stops on SIGTERM with 0,
    and a new container on its volume reads the history."""
    try:
        can_start_containers()
        podman = Podman.configured(tmp_path)
        began = time.monotonic()
        base = ensure_base(podman)
        base_seconds = time.monotonic() - began
        starts_a_container(podman)
        began = time.monotonic()
        image = build(podman, ROOT, TAG)
        build_seconds = time.monotonic() - began
        size = int(podman.ok("image", "inspect", "--format", "{{.Size}}", image))
        # What the report asks for, shown by `pytest -rP` (or -s): size and where the time went.
        sys.stdout.write(
            f"image {size / 1e6:.0f} MB; base {base} in {base_seconds:.0f} s; "
            f"build {build_seconds:.0f} s\n"
        )
        assert size < MAX_SIZE, f"the image has {size / 1e6:.0f} MB"
        run_the_story(podman, image, tmp_path)
    except Unusable as exc:
        unusable = str(exc)
    else:
        return
    pytest.fail(unusable, pytrace=False)


def run_the_story(podman: Podman, image: str, folder: Path) -> None:
    """Watch, run, probe, stop and read the history again, on one named volume."""
    suffix = uuid.uuid4().hex[:10]
    volume = f"tracker-image-test-{suffix}"
    name = f"tracker-image-test-{suffix}"
    podman.ok("volume", "create", volume)
    try:
        with simulator(folder) as upstream:
            port = free_port()
            config = write_config(folder, upstream.url, port)
            mounts = ["--volume", f"{volume}:{DATA}", "--volume", f"{config}:{CONFIG}:ro"]
            watched = upstream.orders[:WATCHED]
            podman.ok("run", "--rm", "--network=none", *mounts, image, "watch", "add", *watched)
            base = f"http://127.0.0.1:{port}"
            podman.ok(
                "run",
                "--detach",
                "--name",
                name,
                "--network=host",
                "--env",
                f"TRACKER_READYZ_URL={base}/readyz",
                *mounts,
                image,
            )
            container = Container(podman, name)
            wait_ready(container, base)
            scraped = wait_polls(container, base)
            answered = counted(scraped, "tracker_polls_total") - counted(
                scraped, "tracker_polls_total", result="failed"
            )
            assert answered >= WATCHED, scraped
            pid = container.state("Pid")
            assert uids(pid) == ["10001"] * 4, "the daemon does not run as the tracker user"
            health = podman("healthcheck", "run", name)
            assert health.returncode == 0, f"the HEALTHCHECK says: {health.stdout}{health.stderr}"
            podman.ok("stop", "--time", "10", name)
            assert container.state("ExitCode") == "0", container.last_log_line()
            assert '"daemon_stopped"' in podman.ok("logs", name)
        # Every transition the daemon counted is on the volume for a container that comes after.
        stored = 0
        for order in watched:
            history = json.loads(
                podman.ok(
                    "run", "--rm", "--network=none", *mounts, image, "history", order, "--json"
                )
            )
            assert history["order_id"] == order
            assert history["snapshots"], history
            stored += len(history["transitions"])
        assert stored >= counted(scraped, "tracker_transitions_total"), scraped
    finally:
        podman("rm", "--force", "--time", "0", name)
        podman("volume", "rm", "--force", volume)
