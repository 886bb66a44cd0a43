"""deploy/compose.yaml and deploy/tracker.compose.toml fit together and the image's HEALTHCHECK."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support import ROOT
from tracker.config import load

#: PyYAML arrives with the test tools (schemathesis); without it there is nothing to read with.
yaml = pytest.importorskip("yaml")

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
TRACKER_TOML = DEPLOY / "tracker.compose.toml"
#: Values of the right shape for the variables the example reads.
SAMPLES = {
    "OPS_WEBHOOK_URL": "https://hooks.example.com/meter-orders",
    "OPS_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode(),
    "TRACKER_SUPPORT_TOKEN": "support-token-0123456789",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def trackers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from the repository's Dockerfile."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def dockerfile_env(name: str) -> str:
    found = re.search(rf"{name}=(\S+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert found, name
    return found[1]


def test_postgres_15_with_a_named_volume_and_a_readiness_check(compose: dict[str, Any]) -> None:
    """PostgreSQL 15 runs on a named volume with a pg_isready check and no published port."""
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "ports" not in postgres  # the compose network only


def test_two_daemons_and_one_serve_from_the_dockerfile(compose: dict[str, Any]) -> None:
    """Compose builds two `run` daemons and one `serve` from the root's Dockerfile, config
    read-only; paths are relative to deploy/, where the file lives."""
    services = trackers(compose)
    commands = sorted(svc["command"][0] for svc in services.values())
    assert commands == ["run", "run", "serve"]
    config_path = dockerfile_env("TRACKER_CONFIG")
    for name, svc in services.items():
        assert (DEPLOY / svc["build"]["context"]).resolve() == ROOT.resolve(), name
        assert (ROOT / svc["build"].get("dockerfile", "Dockerfile")).is_file(), name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
        mounts = {mount["target"]: mount for mount in svc["volumes"]}
        assert mounts[config_path]["read_only"] is True, name
        assert (DEPLOY / mounts[config_path]["source"]).resolve() == TRACKER_TOML.resolve()


def test_ports_are_published_on_the_hosts_loopback_only(compose: dict[str, Any]) -> None:
    """Every published port binds the host's loopback, each on its own host port."""
    published = [port for svc in compose["services"].values() for port in svc.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for port in published), published
    host_ports = [port.split(":")[1] for port in published]
    assert len(host_ports) == len(set(host_ports))


def test_the_shared_config_loads_in_every_service_and_listens_where_the_healthcheck_asks(
    compose: dict[str, Any],
) -> None:
    """The shared config loads in each service and listens where its readiness check asks."""
    for name, svc in trackers(compose).items():
        environment = svc["environment"]
        # Only what the service passes in: a ${VAR} it lacks stops the load, naming it.
        settings = load(
            TRACKER_TOML, {key: SAMPLES.get(key, "sample-value-123456") for key in environment}
        )
        address = settings.http.address
        assert address is not None, name
        assert address.host == "0.0.0.0", name  # noqa: S104 - inside the container, by design
        readyz = urlsplit(
            environment.get("TRACKER_READYZ_URL", dockerfile_env("TRACKER_READYZ_URL"))
        )
        assert (readyz.hostname, readyz.port, readyz.path) == ("127.0.0.1", address.port, "/readyz")
        assert all(port.endswith(f":{address.port}") for port in svc["ports"]), name
        assert settings.database.url.startswith(
            "postgresql://tracker:sample-value-123456@postgres:"
        )


def test_the_support_user_reads_its_token_from_the_environment(compose: dict[str, Any]) -> None:
    """Every service passes the support user's token in; the shared config gives it role read."""
    for name, svc in trackers(compose).items():
        assert "TRACKER_SUPPORT_TOKEN" in svc["environment"], name
    settings = load(
        TRACKER_TOML,
        {key: SAMPLES.get(key, "sample-value-123456") for key in SAMPLES}
        | {"TRACKER_DB_PASSWORD": "x", "NOMOS_API_TOKEN": "y"},
    )
    [user] = settings.http.users
    assert (user.name, user.role) == ("support-ui", "read")
    assert user.token.get_secret_value() == SAMPLES["TRACKER_SUPPORT_TOKEN"]
    assert "${TRACKER_SUPPORT_TOKEN}" in TRACKER_TOML.read_text(encoding="utf-8")
