"""The HTTP listener: health, readiness and Prometheus metrics over Starlette and uvicorn."""

from tracker.web.app import Readiness, build_app
from tracker.web.metrics import Metrics
from tracker.web.server import listening, serve_until_signalled

__all__ = ["Metrics", "Readiness", "build_app", "listening", "serve_until_signalled"]
