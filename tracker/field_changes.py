"""What changed between two snapshots of an order: fields added, removed and changed, nested
fields named by dotted paths (``address.city``, ``meters.0.serial``).

Every value is upstream text, untrusted: it is shown as JSON text (so ``null`` and ``"null"``
differ) and clipped visibly past :data:`MAX_VALUE` characters. The pages escape it.

Pure: standard library only, no I/O.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Characters of one value (or path) shown; the rest is cut, and the cut is said.
MAX_VALUE = 160
#: Changes listed for one snapshot: an answer that changed wholesale is a screen, not a book.
MAX_CHANGES = 50
#: How deep nested fields are followed; deeper ones are compared as a whole.
MAX_DEPTH = 8


class Change(enum.StrEnum):
    """How a field differs from the snapshot before."""

    #: The field is new.
    ADDED = "added"
    #: The field is gone.
    REMOVED = "removed"
    #: The field has another value.
    CHANGED = "changed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Shown:
    """A value as JSON text, perhaps clipped."""

    text: str
    #: The whole text's length when it was clipped, else ``None``.
    clipped: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldChange:
    """One field that differs: its dotted path, how, and the values before and after."""

    path: Shown
    change: Change
    old: Shown | None
    new: Shown | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Changes:
    """The differences of one snapshot from the one before, by path, and how many were left out."""

    fields: tuple[FieldChange, ...]
    more: int = 0


def flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """``value``'s leaves by dotted path; an empty object or list is a leaf of its own."""
    if depth < MAX_DEPTH and isinstance(value, dict) and value:
        items: list[tuple[str, Any]] = [(str(key), item) for key, item in value.items()]
    elif depth < MAX_DEPTH and isinstance(value, list) and value:
        items = [(str(index), item) for index, item in enumerate(value)]
    else:
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, item in items:
        found.update(flatten(item, f"{prefix}.{key}" if prefix else key, depth + 1))
    return found


def shown(value: Any, *, json_text: bool = True) -> Shown:
    """``value`` as JSON text (a path as it is), clipped to :data:`MAX_VALUE` characters."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if json_text else str(value)
    if len(text) <= MAX_VALUE:
        return Shown(text=text)
    return Shown(text=text[:MAX_VALUE], clipped=len(text))


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
    """The fields added, removed and changed from ``old`` to ``new``, by path."""
    # An empty answer has no fields (not one field with an empty path).
    before = flatten(dict(old)) if old else {}
    after = flatten(dict(new)) if new else {}
    found: list[FieldChange] = []
    for path in sorted(before.keys() | after.keys()):
        if path not in before:
            found.append(_change(path, Change.ADDED, None, (after[path],)))
        elif path not in after:
            found.append(_change(path, Change.REMOVED, (before[path],), None))
        elif _differ(before[path], after[path]):
            found.append(_change(path, Change.CHANGED, (before[path],), (after[path],)))
    return Changes(fields=tuple(found[:MAX_CHANGES]), more=max(0, len(found) - MAX_CHANGES))


def _differ(old: Any, new: Any) -> bool:
    # 1 and 1.0 and True compare equal in Python but are different JSON: compare the texts.
    return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)


def _change(
    path: str, change: Change, old: tuple[Any] | None, new: tuple[Any] | None
) -> FieldChange:
    return FieldChange(
        path=shown(path, json_text=False),
        change=change,
        old=None if old is None else shown(old[0]),
        new=None if new is None else shown(new[0]),
    )
