"""Which sinks hear of a transition: ``on`` patterns ``FROM->TO``, each side a status or ``*``.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def matches(pattern: str, from_status: str, to_status: str) -> bool:
    """Whether one pattern matches; ``*`` alone matches every transition."""
    if pattern == "*":
        return True
    source, _, target = pattern.partition("->")
    return source in {"*", from_status} and target in {"*", to_status}


def route(sinks: Mapping[str, Sequence[str]], from_status: str, to_status: str) -> tuple[str, ...]:
    """The names of the sinks whose patterns match the transition, in configuration order."""
    return tuple(name for name, patterns in sinks.items() if _any(patterns, from_status, to_status))


def _any(patterns: Iterable[str], from_status: str, to_status: str) -> bool:
    return any(matches(p, from_status, to_status) for p in patterns)
