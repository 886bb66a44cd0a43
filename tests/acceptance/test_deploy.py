"""deploy/: what an operator copies works as shipped (compose, Prometheus, systemd).

No container registry is reachable here, so the compose file is not started: each of its
trackers' configurations, with exactly the environment compose gives that service, is checked
by `tracker config check`, and the support login is tried with the token it passes in.
Prometheus's files are checked and unit-tested by promtool, against the series a live daemon
serves; the systemd unit by systemd-analyze.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no types; only safe_load is used

from tests.served import metric_names, served, unknown_labels
from tests.support import ROOT, WEBHOOK_SECRET, Ran, app_client
from tracker.config import load
from tracker.store import open_store
from tracker.web import Metrics, build_app

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS = DEPLOY / "prometheus"
UNIT = DEPLOY / "systemd" / "tracker.service"
#: Where the unit and the README install the tracker (a virtual environment).
INSTALLED = "/opt/tracker/bin/tracker"
#: What an operator exports before `compose up`: values of the right shape.
HOST_ENV = {
    "TRACKER_DB_PASSWORD": "0123456789abcdef0123456789abcdef0123456789abcdef",
    "NOMOS_API_TOKEN": "nom_live_0123456789abcdef",
    "OPS_WEBHOOK_URL": "https://hooks.example.com/meter-orders",
    "OPS_WEBHOOK_SECRET": WEBHOOK_SECRET,
    "TRACKER_SUPPORT_TOKEN": "support-token-0123456789abcdef",
}
#: Series the rules may name that Prometheus itself makes (``up``), by the job they come from.
NOT_THE_TRACKERS = {"up": "meter-order-tracker"}
PROMTOOL = "/usr/bin/promtool"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"


def yaml_file(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def tool(path: str, package: str) -> str:
    """The tool's path; its absence fails the test with one line naming the package."""
    if not Path(path).is_file():
        pytest.fail(f"{path} is missing: install Debian's {package} (make test installs it)")
    return path


# -- compose -----------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[?-])([^}]*))?\}|(\w+))")


class Unset(Exception):
    """Compose refuses to start: a ``${VAR:?message}`` is unset or empty."""


def interpolated(value: str, host: Mapping[str, str]) -> str:
    """``value`` with the compose file's ``${VAR}``, ``${VAR:?msg}`` and ``${VAR:-x}`` replaced."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, operator, argument = match[1] or match[4], match[2], match[3]
        found = host.get(name)
        empty = found is None or (found == "" and operator in {":?", ":-"})
        if operator in {":?", "?"} and empty:
            raise Unset(f"{name}: {argument}")
        if operator in {":-", "-"} and empty:
            return argument
        return found or ""

    return _INTERPOLATION.sub(one, value)


def variables(value: object) -> set[str]:
    """The ``${VAR}`` names a parsed TOML document's strings use (comments left out)."""
    if isinstance(value, str):
        return set(re.findall(r"\$\{(\w+)\}", value))
    if isinstance(value, dict):
        return set().union(*(variables(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(variables(item) for item in value))
    return set()


def trackers(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def service_env(svc: Mapping[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    """The environment compose gives the service's container."""
    return {key: interpolated(str(value), host) for key, value in svc["environment"].items()}


def mounted_config(svc: Mapping[str, Any]) -> Path:
    """The host file mounted where the image reads its configuration."""
    [mount] = [m for m in svc["volumes"] if m["target"] == "/etc/tracker/tracker.toml"]
    return (COMPOSE.parent / str(mount["source"])).resolve()


async def config_check(path: Path, env: Mapping[str, str]) -> Ran:
    """`tracker config check` with only ``env`` (and a PATH), as in the service's container."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker",
        "config",
        "check",
        "--config",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


class TestCompose:
    """deploy/compose.yaml: every tracker's configuration passes the check it would meet."""

    async def test_every_tracker_service_passes_config_check(self) -> None:
        """Each tracker service's mounted config passes `config check` with that service's env."""
        compose = yaml_file(COMPOSE)
        services = trackers(compose)
        assert sorted(services) == ["serve", "tracker-1", "tracker-2"]
        runs = await asyncio.gather(
            *(
                config_check(mounted_config(svc), service_env(svc, HOST_ENV))
                for svc in services.values()
            )
        )
        for name, ran in zip(services, runs, strict=True):
            assert ran.code == 0, f"{name}: {ran.err}"
            assert "database: postgresql at postgres:5432/tracker;" in ran.out, name
            assert "listen: 0.0.0.0:8080; http users: 1)" in ran.out, name
            assert HOST_ENV["TRACKER_DB_PASSWORD"] not in ran.out + ran.err

    def test_compose_refuses_to_start_while_a_variable_the_config_needs_is_unset(self) -> None:
        """Every ${VAR} of the shared config is passed to every tracker, and is required."""
        compose = yaml_file(COMPOSE)
        for svc in trackers(compose).values():
            needed = variables(tomllib.loads(mounted_config(svc).read_text("utf-8")))
            assert needed <= svc["environment"].keys()
            for name in needed:
                with pytest.raises(Unset, match=f"^{name}: set {name}"):
                    service_env(svc, {k: v for k, v in HOST_ENV.items() if k != name})

    async def test_the_support_user_logs_in_with_the_token_compose_passes(
        self, tmp_path: Path
    ) -> None:
        """The serve service's config admits the support user's token at /login, and no other."""
        serve = yaml_file(COMPOSE)["services"]["serve"]
        settings = load(mounted_config(serve), service_env(serve, HOST_ENV))
        async with open_store(f"sqlite:///{tmp_path / 'tracker.db'}") as store:
            app = build_app(store=store, metrics=Metrics(), users=settings.http.users)
            async with app_client(app) as (_url, client):
                refused = await client.post("/login", data={"token": "not-the-support-token"})
                login = await client.post(
                    "/login", data={"token": HOST_ENV["TRACKER_SUPPORT_TOKEN"]}
                )
                board = await client.get("/")
        assert refused.status_code == 401
        assert login.status_code == 303
        assert board.status_code == 200


# -- Prometheus --------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    """Every rule of the shipped rule files."""
    config = yaml_file(PROMETHEUS / "prometheus.yml")
    found: list[dict[str, Any]] = []
    for name in config["rule_files"]:
        for group in yaml_file(PROMETHEUS / name)["groups"]:
            found += group["rules"]
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(PROMTOOL, "prometheus"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


BUCKETS = ("0.05", "0.1", "0.2", "0.5", "1.0", "2.0", "5.0", "30.0", "120.0", "600.0", "+Inf")


def up(instance: str, role: str, values: str) -> dict[str, str]:
    labels = f'job="meter-order-tracker", role="{role}", instance="{instance}"'
    return {"series": f"up{{{labels}}}", "values": values}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """A tracker series as daemon 1 serves it; ``labels`` add to or replace its labels."""
    merged = {"job": "meter-order-tracker", "role": "daemon", "instance": "127.0.0.1:8081"}
    text = ", ".join(f'{key}="{value}"' for key, value in (merged | labels).items())
    return {"series": f"tracker_{name}{{{text}}}", "values": values}


def lateness(late: str, early: str) -> list[dict[str, str]]:
    """Histogram buckets: ``early`` for the bounds up to 2 minutes, ``late`` above."""
    return [
        series("poll_lateness_seconds_bucket", early if float(le) <= 120 else late, le=le)
        for le in BUCKETS
    ]


def alert(name: str, at: str, *fired: dict[str, str]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": name,
        "exp_alerts": [{"exp_labels": labels} for labels in fired],
    }


DAEMON_1 = {"job": "meter-order-tracker", "role": "daemon", "instance": "127.0.0.1:8081"}
#: Each operator's concern as promtool input series and what must (not) fire when: every
#: scenario keeps quiet before its ``for`` has passed, and a healthy twin never fires.
SCENARIOS: list[dict[str, Any]] = [
    {  # both daemons stop answering; serve stays up
        "interval": "1m",
        "input_series": [
            up("127.0.0.1:8081", "daemon", "1 1 0x20"),
            up("127.0.0.1:8082", "daemon", "1 1 0x20"),
            up("127.0.0.1:8080", "serve", "1x22"),
        ],
        "alert_rule_test": [
            alert("TrackerNoLiveDaemon", "4m"),
            alert("TrackerNoLiveDaemon", "10m", {"severity": "critical"}),
            alert(
                "TrackerInstanceDown",
                "10m",
                {"severity": "warning", **DAEMON_1},
                {"severity": "warning", **DAEMON_1, "instance": "127.0.0.1:8082"},
            ),
        ],
    },
    {  # one daemon of two stops: the other still polls
        "interval": "1m",
        "input_series": [
            up("127.0.0.1:8081", "daemon", "1 1 0x20"),
            up("127.0.0.1:8082", "daemon", "1x22"),
        ],
        "alert_rule_test": [
            alert("TrackerNoLiveDaemon", "10m"),
            alert("TrackerInstanceDown", "10m", {"severity": "warning", **DAEMON_1}),
        ],
    },
    {  # /readyz would answer 503
        "interval": "1m",
        "input_series": [series("ready", "1 1 0x20"), series("ready", "1x22", instance="x:1")],
        "alert_rule_test": [
            alert("TrackerNotReady", "4m"),
            alert("TrackerNotReady", "10m", {"severity": "critical", **DAEMON_1}),
        ],
    },
    {  # two orders reported stuck in installation_planning, served by two instances
        "interval": "1m",
        "input_series": [
            series("stuck_orders", "0 0 2x20", status="installation_planning"),
            series("stuck_orders", "0 0 2x20", status="installation_planning", instance="x:1"),
        ],
        "alert_rule_test": [
            alert("TrackerOrdersStuck", "4m"),
            alert(
                "TrackerOrdersStuck",
                "10m",
                {"severity": "warning", "status": "installation_planning"},
            ),
        ],
    },
    {  # none stuck
        "interval": "1m",
        "input_series": [series("stuck_orders", "0x20", status="installation_planning")],
        "alert_rule_test": [alert("TrackerOrdersStuck", "10m")],
    },
    {  # the last successful poll was at the start, orders are watched
        "interval": "1m",
        "input_series": [
            series("last_successful_poll_timestamp_seconds", "0x200"),
            series("watched_orders", "3x200", status="waiting"),
            series("watched_orders", "0x200", status="ordered"),
        ],
        "alert_rule_test": [
            alert("TrackerNoSuccessfulPoll", "1h"),
            alert("TrackerNoSuccessfulPoll", "3h", {"severity": "critical"}),
        ],
    },
    {  # ... and with no order watched there is nothing to poll
        "interval": "1m",
        "input_series": [
            series("last_successful_poll_timestamp_seconds", "0x200"),
            series("watched_orders", "0x200", status="waiting"),
        ],
        "alert_rule_test": [alert("TrackerNoSuccessfulPoll", "3h")],
    },
    {  # the oldest pending delivery to ops ages a minute a minute; hooks has none pending
        "interval": "1m",
        "input_series": [
            series("outbox_oldest_pending_age_seconds", "0+60x90", sink="ops"),
            series("outbox_oldest_pending_age_seconds", "0x90", sink="hooks"),
        ],
        "alert_rule_test": [
            alert("TrackerDeliveryLate", "50m"),
            alert("TrackerDeliveryLate", "70m", {"severity": "warning", "sink": "ops"}),
        ],
    },
    {  # the first dead letter of a daemon's life: the series is born at 1
        "interval": "1m",
        "input_series": [
            series("deliveries_total", "_x30 1x100", sink="ops", result="dead"),
            series("deliveries_total", "0+5x130", sink="ops", result="delivered"),
        ],
        "alert_rule_test": [
            alert("TrackerDeadLetters", "20m"),
            alert("TrackerDeadLetters", "40m", {"severity": "warning", "sink": "ops"}),
            alert("TrackerDeadLetters", "100m"),  # none more for an hour
        ],
    },
    {  # dead letters rising on a long-lived series
        "interval": "1m",
        "input_series": [
            series("deliveries_total", "2x90 3 4 5x40", sink="ops", result="dead"),
        ],
        "alert_rule_test": [
            alert("TrackerDeadLetters", "85m"),
            alert("TrackerDeadLetters", "95m", {"severity": "warning", "sink": "ops"}),
        ],
    },
    {  # the upstream answers 429s, 5 a minute
        "interval": "1m",
        "input_series": [
            series("upstream_requests_total", "0+5x60", code="429"),
            series("upstream_requests_total", "0+100x60", code="200"),
        ],
        "alert_rule_test": [
            alert("TrackerUpstreamRateLimited", "10m"),
            alert("TrackerUpstreamRateLimited", "30m", {"severity": "warning"}),
        ],
    },
    {  # only 200s
        "interval": "1m",
        "input_series": [series("upstream_requests_total", "0+100x60", code="200")],
        "alert_rule_test": [alert("TrackerUpstreamRateLimited", "30m")],
    },
    {  # every poll starts minutes late
        "interval": "1m",
        "input_series": lateness(late="0+10x90", early="0x90"),
        "alert_rule_test": [
            alert("TrackerPollsLate", "20m"),
            alert("TrackerPollsLate", "60m", {"severity": "warning"}),
        ],
    },
    {  # every poll on time
        "interval": "1m",
        "input_series": lateness(late="0+10x90", early="0+10x90"),
        "alert_rule_test": [alert("TrackerPollsLate", "60m")],
    },
]


class TestPrometheus:
    """deploy/prometheus: a valid scrape config and rules that fire on what they watch."""

    def test_promtool_checks_the_config_and_the_rules(self) -> None:
        """promtool accepts the scrape config (its rule files with it) and the rules alone."""
        config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
        assert config.returncode == 0, config.stdout + config.stderr
        for name in yaml_file(PROMETHEUS / "prometheus.yml")["rule_files"]:
            checked = promtool("check", "rules", str(PROMETHEUS / name))
            assert checked.returncode == 0, checked.stdout + checked.stderr

    def test_each_alert_fires_on_its_signal_and_only_then(self, tmp_path: Path) -> None:
        """promtool's rule tests: each alert fires after its `for`, a healthy twin never."""
        tested = {test["alertname"] for s in SCENARIOS for test in s["alert_rule_test"]}
        assert tested == {rule["alert"] for rule in rules()}, "a rule without a scenario"
        # Annotations are checked by `promtool check rules`; here only when and with what labels.
        stripped = []
        for name in yaml_file(PROMETHEUS / "prometheus.yml")["rule_files"]:
            loaded = yaml_file(PROMETHEUS / name)
            for group in loaded["groups"]:
                for rule in group["rules"]:
                    rule.pop("annotations", None)
            (tmp_path / name).write_text(json.dumps(loaded), encoding="utf-8")
            stripped.append(name)
        tests = {"rule_files": stripped, "evaluation_interval": "1m", "tests": SCENARIOS}
        (tmp_path / "tests.yml").write_text(json.dumps(tests), encoding="utf-8")
        ran = promtool("test", "rules", "tests.yml", cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr

    def test_every_metric_a_rule_names_is_served(self) -> None:
        """Each rule's tracker metrics appear on a live daemon's /metrics; others are known."""
        names = served()
        for rule in rules():
            used = metric_names(rule["expr"])
            assert used, rule["alert"]
            for name in used:
                if name.startswith("tracker_"):
                    assert name in names, f"{rule['alert']}: {name} is not served"
                else:
                    assert name in NOT_THE_TRACKERS, f"{rule['alert']}: what serves {name}?"

    def test_rules_match_and_group_by_labels_their_metrics_have(self) -> None:
        """Each rule's matchers and groupings name labels its served metrics carry."""
        names = served()
        for rule in rules():
            unknown = unknown_labels(rule["expr"], names)
            assert not unknown, f"{rule['alert']}: no label {sorted(unknown)}"

    def test_the_jobs_and_roles_the_rules_name_are_scraped(self) -> None:
        """Every job and role a rule matches is one the scrape config defines."""
        config = yaml_file(PROMETHEUS / "prometheus.yml")
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        roles = {
            static["labels"]["role"] for job in jobs.values() for static in job["static_configs"]
        }
        assert roles == {"daemon", "serve"}
        for name, job in NOT_THE_TRACKERS.items():
            assert job in jobs, name
        for rule in rules():
            for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', rule["expr"]):
                assert job in jobs, rule["alert"]
            for role in re.findall(r'\brole\s*=\s*"([^"]*)"', rule["expr"]):
                assert role in roles, rule["alert"]
            for name in metric_names(rule["expr"]) & NOT_THE_TRACKERS.keys():
                assert f'job="{NOT_THE_TRACKERS[name]}"' in rule["expr"], rule["alert"]


# -- systemd -----------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` to its values, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()  # noqa: PLW2901 - the stripped line is the line
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return found


def installed_here(tmp_path: Path) -> Path:
    """The unit as shipped, with the tracker of this virtual environment for /opt/tracker's."""
    here = shutil.which("tracker", path=str(Path(sys.executable).parent))
    assert here is not None, "no tracker script beside this Python"
    unit = tmp_path / "tracker.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED, here), encoding="utf-8")
    return unit


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool(SYSTEMD_ANALYZE, "systemd"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestSystemd:
    """deploy/systemd/tracker.service: a valid, sandboxed unit for `tracker run`."""

    def test_systemd_analyze_verifies_the_unit_without_a_warning(self, tmp_path: Path) -> None:
        """systemd-analyze verify accepts the unit, and warns of nothing (unknown keys included)."""
        ran = analyze("verify", str(installed_here(tmp_path)))
        assert (ran.returncode, ran.stderr, ran.stdout) == (0, "", "")

    def test_the_sandbox_exposure_stays_low(self, tmp_path: Path) -> None:
        """systemd-analyze security rates the unit's exposure 2.0 or lower (of 10)."""
        ran = analyze(
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            str(installed_here(tmp_path)),
        )
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr

    def test_the_daemon_runs_as_its_own_user_reloads_on_sighup_and_restarts(self) -> None:
        """`tracker run` as user tracker; reload checks the file then sends SIGHUP; restarts."""
        unit = unit_settings(UNIT.read_text(encoding="utf-8"))
        assert unit["Service.ExecStart"] == [f"{INSTALLED} run"]
        assert unit["Service.User"] == ["tracker"]
        assert unit["Service.ExecReload"] == [
            f"{INSTALLED} config check",
            "/bin/kill -HUP $MAINPID",
        ]
        assert unit["Service.Restart"] == ["on-failure"]
        assert unit["Service.RestartPreventExitStatus"] == ["2"]  # a configuration error
        assert unit["Service.Environment"] == ["TRACKER_CONFIG=/etc/tracker/tracker.toml"]
        assert unit["Install.WantedBy"] == ["multi-user.target"]

    def test_the_file_system_is_read_only_but_the_database_folder(self) -> None:
        """ProtectSystem=strict and friends; only the state folder (the SQLite file) is writable."""
        unit = unit_settings(UNIT.read_text(encoding="utf-8"))
        expected = {
            "ProtectSystem": "strict",
            "ReadWritePaths": "/var/lib/tracker",
            "StateDirectory": "tracker",
            "WorkingDirectory": "/var/lib/tracker",
            "NoNewPrivileges": "yes",
            "PrivateTmp": "yes",
            "ProtectHome": "yes",
            "PrivateDevices": "yes",
            "CapabilityBoundingSet": "",
        }
        for key, value in expected.items():
            assert unit[f"Service.{key}"] == [value], key

    def test_the_readme_installs_where_the_unit_runs_it(self) -> None:
        """The README's Deploy section installs the tracker at the path the unit starts."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        deploy = readme[readme.index("\n## Deploy\n") :]
        assert "python3 -m venv /opt/tracker" in deploy
        assert "deploy/systemd/tracker.service" in deploy
        assert INSTALLED.removesuffix("/tracker") in UNIT.read_text(encoding="utf-8")
