"""The meter-order lifecycle: the 14 documented statuses and how a status change is classified.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.StrEnum):
    """The 14 statuses of a meter order in API version ``2026-01-29.edison``."""

    #: The customer shows interest but has not yet completed the order.
    INTENDED = "intended"
    #: Requested; waiting to transfer the order to the meter provider (e.g. missing MaLo, MeLo).
    WAITING = "waiting"
    #: The order was transferred to the meter provider.
    ORDERED = "ordered"
    #: The meter provider did a smart-meter check and confirmed to process the order.
    CHECKED = "checked"
    #: The provider is planning the installation (e.g. waiting for the customer to confirm a date).
    INSTALLATION_PLANNING = "installation_planning"
    #: The provider has scheduled the installation with the customer.
    INSTALLATION_SCHEDULED = "installation_scheduled"
    #: The provider is waiting for the installation to start.
    INSTALLATION_WAITING = "installation_waiting"
    #: Installed; the new meter data has been transferred to the network operator.
    INSTALLATION_FINISHED = "installation_finished"
    #: The smart meter is installed.
    INSTALLED = "installed"
    #: The smart meter is activated and transmits consumption data automatically.
    ACTIVATED = "activated"
    #: A smart meter was already installed; no installation is needed.
    PRE_INSTALLED = "pre_installed"
    #: The order has been cancelled.
    CANCELLED = "cancelled"
    #: Artificially blocked by the provider's system, waiting for admin approval.
    BLOCKED = "blocked"
    #: Blocked in the WiM process, waiting for the network operator to confirm the installation.
    BLOCKED_WIM = "blocked_wim"


#: The happy path, in order.
MAIN_PATH: tuple[Status, ...] = (
    Status.INTENDED,
    Status.WAITING,
    Status.ORDERED,
    Status.CHECKED,
    Status.INSTALLATION_PLANNING,
    Status.INSTALLATION_SCHEDULED,
    Status.INSTALLATION_WAITING,
    Status.INSTALLATION_FINISHED,
    Status.INSTALLED,
    Status.ACTIVATED,
)
#: Statuses after which nothing is expected to happen.
FINAL: frozenset[Status] = frozenset({Status.ACTIVATED, Status.CANCELLED, Status.PRE_INSTALLED})
#: Statuses in which the order waits for somebody else's approval.
BLOCKED: frozenset[Status] = frozenset({Status.BLOCKED, Status.BLOCKED_WIM})
#: Final statuses that mean the customer got a working meter.
COMPLETE: frozenset[Status] = frozenset({Status.ACTIVATED, Status.PRE_INSTALLED})

_POSITION = {status: index for index, status in enumerate(MAIN_PATH)}
_KNOWN = frozenset(Status)


class Kind(enum.StrEnum):
    """How a status change relates to the lifecycle."""

    #: One step forward on the main path.
    ADVANCE = "advance"
    #: Forward on the main path past one or more statuses (listed in ``skipped``).
    SKIP_AHEAD = "skip_ahead"
    #: Backward on the main path.
    REGRESS = "regress"
    #: Into ``blocked`` or ``blocked_wim``.
    BLOCK = "block"
    #: Out of a blocked status back onto the main path.
    UNBLOCK = "unblock"
    #: Into ``cancelled``.
    CANCEL = "cancel"
    #: Into ``activated`` or ``pre_installed``: the customer has a working meter.
    COMPLETE = "complete"
    #: Out of a final status: unexpected, worth a human look.
    LEAVES_FINAL = "leaves_final"
    #: One side is not one of the 14 documented statuses.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """The kind of a status change, with the main-path statuses it jumped over."""

    kind: Kind
    skipped: tuple[Status, ...] = ()


def is_known(status: str) -> bool:
    """Whether ``status`` is one of the 14 documented statuses."""
    return status in _KNOWN


def is_final(status: str) -> bool:
    """Whether ``status`` is final (``activated``, ``cancelled`` or ``pre_installed``)."""
    return status in FINAL


def classify(from_status: str, to_status: str) -> Classification:
    """Classify the change ``from_status -> to_status``; equal statuses are not a change."""
    if from_status == to_status:
        raise ValueError(f"{from_status!r} -> {to_status!r} is not a status change")
    if not (is_known(from_status) and is_known(to_status)):
        return Classification(kind=Kind.UNKNOWN)
    source, target = Status(from_status), Status(to_status)
    if source in FINAL:
        return Classification(kind=Kind.LEAVES_FINAL)
    if target is Status.CANCELLED:
        return Classification(kind=Kind.CANCEL)
    if target in COMPLETE:
        return Classification(kind=Kind.COMPLETE, skipped=_between(source, target))
    if target in BLOCKED:
        return Classification(kind=Kind.BLOCK)
    if source in BLOCKED:
        return Classification(kind=Kind.UNBLOCK)
    return _along_main_path(source, target)


def _between(source: Status, target: Status) -> tuple[Status, ...]:
    """Main-path statuses strictly between two main-path statuses, if both are on it."""
    if source not in _POSITION or target not in _POSITION:
        return ()
    return MAIN_PATH[_POSITION[source] + 1 : _POSITION[target]]


def _along_main_path(source: Status, target: Status) -> Classification:
    step = _POSITION[target] - _POSITION[source]
    if step < 0:
        return Classification(kind=Kind.REGRESS)
    if step == 1:
        return Classification(kind=Kind.ADVANCE)
    return Classification(kind=Kind.SKIP_AHEAD, skipped=_between(source, target))
