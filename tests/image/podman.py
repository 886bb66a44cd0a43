"""Podman as this kind of machine needs it, and the Debian base image made from Debian's mirror.

The machines run cgroup v1 (hybrid) without systemd as PID 1, so podman is told to manage cgroups
itself (``cgroupfs``), to keep events and container logs in files rather than in journald and to
set no ulimits of its own (``default_ulimits = []``: the host's apply). Those settings live in a
``containers.conf`` of the test's own, never in the machine's. No container registry answers,
so ``debian:bookworm-slim`` is made with ``debootstrap --variant=minbase`` and ``podman import``,
trimmed as Debian's own slim image is.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The base the Dockerfile names, as a pull from Docker Hub would have named it.
BASE = "docker.io/library/debian:bookworm-slim"
#: Debian's mirror; its default sources in the base are plain http like debootstrap's own.
MIRROR = "http://deb.debian.org/debian"
#: The machine's CA bundle, given to the build as a secret so that pip trusts what it trusts.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Held while the base is made, so that two runs on one machine do not both debootstrap it.
BASE_LOCK = Path(tempfile.gettempdir()) / "tracker-image-test-base.lock"
#: The test's own containers.conf (see the module's docstring).
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""
#: Seconds a command may take before the test gives up on it: a build downloads Debian packages
#: and the lock, debootstrap a minimal Debian; generous, these are not verdicts.
SLOW = 900
#: The same for every other command (a container's start, a run of the CLI, an inspect).
QUICK = 120
#: Debian's sources for the base, like the official image's: security updates come from Debian.
SOURCES = f"""\
Types: deb
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
#: What the slim image leaves out of every package it installs (as debuerreotype's slim does).
SLIM_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
"""
#: Downloaded packages and lists are dropped after every install, as in the official image.
APT_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
#: No translations of package descriptions, and lists kept compressed, as in the official image.
APT_LISTS = """\
Acquire::Languages "none";
Acquire::GzipIndexes "true";
"""


class Unusable(Exception):
    """A step the image test needs failed; the message is the one line the test reports."""


@dataclass(frozen=True, slots=True)
class Podman:
    """``podman`` with the test's containers.conf and cgroup manager."""

    conf: Path

    @classmethod
    def configured(cls, folder: Path) -> Podman:
        """Podman with the test's own containers.conf written into ``folder``."""
        if shutil.which("podman") is None:
            raise Unusable("podman is not installed: run scripts/system-packages")
        conf = folder / "containers.conf"
        conf.write_text(CONTAINERS_CONF, encoding="utf-8")
        return cls(conf)

    def __call__(
        self, *args: str, limit: float = QUICK, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``podman ARGS`` and return what it did, whatever its exit code."""
        try:
            return subprocess.run(
                ["podman", "--cgroup-manager=cgroupfs", *args],
                stdin=stdin,
                capture_output=True,
                text=True,
                env={**os.environ, "CONTAINERS_CONF": str(self.conf)},
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise Unusable(f"podman {args[0]} took longer than {limit:.0f} s") from exc

    def ok(self, *args: str, limit: float = QUICK) -> str:
        """Run ``podman ARGS``; its stdout, or :class:`Unusable` with its last error line."""
        ran = self(*args, limit=limit)
        if ran.returncode != 0:
            raise Unusable(f"podman {args[0]} failed ({ran.returncode}): {last_line(ran.stderr)}")
        return ran.stdout

    def exists(self, image: str) -> bool:
        """Whether ``image`` is in the local storage."""
        return self("image", "exists", image).returncode == 0


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: where tools put the reason."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def can_start_containers() -> None:
    """Fail with one line where podman cannot start containers (e.g. an unprivileged container)."""
    if os.geteuid() != 0:
        raise Unusable(
            "podman cannot start containers here: the image test runs as root "
            "(debootstrap and podman with runc)"
        )
    capabilities = Path("/proc/self/status").read_text(encoding="utf-8")
    effective = next(line for line in capabilities.splitlines() if line.startswith("CapEff:"))
    cap_sys_admin = 21
    if not int(effective.split()[1], 16) >> cap_sys_admin & 1:
        raise Unusable(
            "podman cannot start containers here: no CAP_SYS_ADMIN "
            "(the tests run inside an unprivileged container)"
        )


def starts_a_container(podman: Podman) -> None:
    """Fail with one line unless podman can start a container of the base."""
    ran = podman("run", "--rm", "--network=none", BASE, "true")
    if ran.returncode != 0:
        raise Unusable(
            "podman cannot start a container here (the tests inside an unprivileged "
            f"container?): {last_line(ran.stderr)}"
        )


def ensure_base(podman: Podman) -> str:
    """The Debian base image: already there, or made from Debian's mirror now (returns how)."""
    with _locked(BASE_LOCK):
        if podman.exists(BASE):
            return "reused"
        if shutil.which("debootstrap") is None:
            raise Unusable("debootstrap is not installed: run scripts/system-packages")
        with tempfile.TemporaryDirectory(prefix="tracker-base-", dir="/var/tmp") as folder:
            root = Path(folder) / "root"
            try:
                _debootstrap(root)
                _slim(root)
                _import(podman, root)
            finally:
                _unmount_under(root)
        return "made with debootstrap"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unmount_under(root: Path) -> None:
    """Unmount what a debootstrap cut short left mounted (/proc, /sys), so that the tree can go."""
    mounts = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    inside = [m.split()[1] for m in mounts if m.split()[1].startswith(f"{root.resolve()}/")]
    for point in reversed(inside):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _debootstrap(root: Path) -> None:
    try:
        ran = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
            capture_output=True,
            text=True,
            timeout=SLOW,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise Unusable(f"debootstrap took longer than {SLOW} s") from exc
    if ran.returncode != 0:
        log = root / "debootstrap" / "debootstrap.log"
        reason = (
            last_line(log.read_text(encoding="utf-8", errors="replace")) if log.exists() else ""
        )
        raise Unusable(
            f"debootstrap failed ({ran.returncode}): {reason or last_line(ran.stderr + ran.stdout)}"
        )


def _slim(root: Path) -> None:
    """Trim the tree like Debian's slim image: no docs, man pages, locales, lists or downloads."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(SOURCES, encoding="utf-8")
    (root / "etc/dpkg/dpkg.cfg.d/docker").write_text(SLIM_EXCLUDES, encoding="utf-8")
    (root / "etc/apt/apt.conf.d/docker-clean").write_text(APT_CLEAN, encoding="utf-8")
    (root / "etc/apt/apt.conf.d/docker-lists").write_text(APT_LISTS, encoding="utf-8")
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*_*",
        "var/log/*.log",
        "var/log/apt/*",
        "usr/share/info/*",
        "usr/share/man/*",
        "usr/share/doc/*/*",
        "usr/share/locale/*",
    ):
        for path in root.glob(pattern):
            if path.name in {"copyright", "locale.alias"}:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _import(podman: Podman, root: Path) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-c", "."],
        stdout=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        with tar.stdout:
            ran = podman(
                "import",
                "--change",
                'CMD ["bash"]',
                "--message",
                "debootstrap --variant=minbase bookworm, trimmed like debian:bookworm-slim",
                "-",
                BASE,
                limit=SLOW,
                stdin=tar.stdout,
            )
    except Unusable:
        tar.kill()
        raise
    finally:
        tar.wait(QUICK)
    if tar.returncode != 0 or ran.returncode != 0:
        raise Unusable(f"podman import of the base failed: {last_line(ran.stderr)}")


def build(podman: Podman, context: Path, tag: str) -> str:
    """Build the Dockerfile in ``context`` as ``tag``, trusting the machine's CA bundle; its id.

    Docker's format, as OCI's has no HEALTHCHECK; the host's network, as the build only fetches
    Debian packages and the lock (no bridge, no firewall rules); both stages at once. The build
    stage is tagged too (``TAG-build``, from the cache), so that what an earlier run left under
    either tag can be removed: repeated runs keep one set of layers, not one per change.
    """
    stage = f"{tag}-build"
    before = {name: image_id(podman, name) for name in (tag, stage)}
    iidfile = podman.conf.parent / "image.id"
    common = [
        "build",
        "--pull=never",
        "--network=host",
        "--layers",
        "--format=docker",
        *(["--secret", f"id=ca-bundle,src={CA_BUNDLE}"] if CA_BUNDLE.exists() else []),
    ]
    podman.ok(*common, "--jobs=2", f"--iidfile={iidfile}", "--tag", tag, str(context), limit=SLOW)
    podman.ok(*common, "--target=build", "--tag", stage, str(context), limit=SLOW)
    for name, old in before.items():
        if old and old != image_id(podman, name):
            podman("rmi", old)
    return iidfile.read_text(encoding="utf-8").strip().removeprefix("sha256:")


def image_id(podman: Podman, name: str) -> str:
    """The id of the image called ``name``; empty when there is none."""
    return podman("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
