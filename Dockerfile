# The tracker daemon on Debian 12: Debian's python3 (security updates come from Debian) and the
# hashed lock in a virtual environment at /opt/tracker. Build it with the machine's CA bundle as a
# secret, so that pip trusts what the machine trusts (a proxy's CA, say), and in Docker's format,
# which keeps the HEALTHCHECK (OCI's drops it):
#   podman build --format docker --jobs 2 --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t tracker .
#   (docker: BuildKit, the default since Docker 23, takes the same --secret; without it pip uses its own CAs)
# Run: podman run -v tracker-data:/var/lib/tracker -v ./tracker.toml:/etc/tracker/tracker.toml:ro tracker

# The virtual environment, built apart: pip, setuptools, binutils and the sources stay here.
# Both stages start from the base, so a builder may run them at once (podman build --jobs 2).
FROM debian:bookworm-slim AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv binutils \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/tracker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1
WORKDIR /src
COPY requirements.lock ./
# The machine's CA bundle, given as the secret ca-bundle, is what pip trusts (else pip's own);
# a secret, not a layer: it is mounted for this step only.
RUN --mount=type=secret,id=ca-bundle,target=/run/secrets/ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/tracker/bin/pip install --require-hashes --no-deps --no-compile -r requirements.lock
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY migrations ./migrations
# Installed, then its build tools removed. Extension modules lose their debug symbols (10 MB),
# except those patched to find bundled libraries (an RPATH), which strip could break. Compiled
# here (11 MB): a command starts in half the time (1.1 s, not 2.2 s, to import the daemon), as
# the unprivileged user can write no cache; checked by hash, not by the sources' times, which a
# copy between stages need not keep. The last line proves that it all still imports.
RUN /opt/tracker/bin/pip install --no-deps --no-build-isolation --no-compile . \
    && /opt/tracker/bin/pip uninstall --yes --quiet setuptools pip \
    && find /opt/tracker -name '*.so' -type f -exec sh -c \
        'for f; do readelf -d "$f" | grep -q "R.*PATH" || strip --strip-unneeded "$f"; done' sh {} + \
    && /opt/tracker/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/tracker/lib \
    && /opt/tracker/bin/python -c "import tracker.cli, tracker.daemon, tracker.web.app, psycopg, aiosqlite"

# What runs: Debian's python3, the unprivileged user and the environment; no compiler, no pip.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tracker --no-create-home \
        --shell /usr/sbin/nologin tracker \
    && mkdir -p /var/lib/tracker /etc/tracker \
    && chown tracker:tracker /var/lib/tracker
COPY --from=build /opt/tracker /opt/tracker
ENV PATH=/opt/tracker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRACKER_CONFIG=/etc/tracker/tracker.toml
USER tracker
# Healthy while /readyz answers 200 (database answers, scheduler ticking). The mounted
# configuration must listen where this URL points: inside the container "0.0.0.0:8080",
# published to the host's loopback only (-p 127.0.0.1:8080:8080). urllib: the image has no curl.
ENV TRACKER_READYZ_URL=http://127.0.0.1:8080/readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['TRACKER_READYZ_URL'], timeout=4)"]
WORKDIR /var/lib/tracker
# The SQLite file lives here (database.url = "sqlite:////var/lib/tracker/tracker.db").
VOLUME ["/var/lib/tracker"]
# SIGTERM stops the daemon cleanly with exit 0 (podman/docker stop sends it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tracker"]
CMD ["run"]
