# The tracker daemon: `docker run -v tracker-data:/var/lib/tracker -v ./tracker.toml:/etc/tracker/tracker.toml IMAGE`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRACKER_CONFIG=/etc/tracker/tracker.toml

WORKDIR /src
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && useradd --system --uid 10001 --home-dir /var/lib/tracker tracker \
    && mkdir -p /var/lib/tracker /etc/tracker \
    && chown tracker /var/lib/tracker

USER tracker
# Healthy while /readyz answers 200 (database answers, scheduler ticking). The mounted
# configuration must listen where this URL points: inside the container "0.0.0.0:8080",
# published to the host's loopback only (-p 127.0.0.1:8080:8080). urllib: the image has no curl.
ENV TRACKER_READYZ_URL=http://127.0.0.1:8080/readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ['TRACKER_READYZ_URL'], timeout=4)"]
WORKDIR /var/lib/tracker
# The SQLite file lives here (database.url = "sqlite:////var/lib/tracker/tracker.db").
VOLUME ["/var/lib/tracker"]
ENTRYPOINT ["tracker"]
CMD ["run"]
