"""Which sinks hear of an event: ``on`` patterns ``FROM->TO`` (each side a status or ``*``) for
transitions; ``stuck:STATUS`` (or ``stuck:*``), ``poll_failing`` and ``poll_recovered`` for alerts,
which ``*`` does not match.

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


def route_event(
    sinks: Mapping[str, Sequence[str]], kind: str, status: str | None
) -> tuple[str, ...]:
    """The names of the sinks that asked for alerts of ``kind`` (in ``status``), in order."""
    wanted = {f"{kind}:*", f"{kind}:{status}"} if kind == "stuck" else {kind}
    return tuple(name for name, patterns in sinks.items() if wanted.intersection(patterns))
