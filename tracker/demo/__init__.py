"""The demo, apart from the product: the simulated upstream, local receivers, and ``tracker demo``.

``run_demo`` is imported on first use, so that ``python -m tracker.demo.simulator`` (and a test
importing the simulator) loads neither the daemon nor the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracker.demo.show import run_demo

__all__ = ["run_demo"]


def __getattr__(name: str) -> object:
    """``run_demo`` from :mod:`tracker.demo.show`, imported when first asked for."""
    if name == "run_demo":
        from tracker.demo.show import run_demo  # noqa: PLC0415 - imported on first use

        return run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
