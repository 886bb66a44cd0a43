"""The report page's flow diagram: statuses as boxes on a grid, one arrow per transition taken.

Pure geometry (the template draws it as SVG). Arrows never pass through a box: between
neighbours of one row an arrow runs straight across the gap; between non-neighbours of one row
it arcs above the row (rightwards) or below it (leftwards); to the next row it curves from the
box's bottom (or top) edge through the space between the rows; across a row it runs down (or
up) a gap between that row's boxes. Each count sits on its arrow in a white label placed where
it covers no box and, when there is room, no other label. The same moves give the same drawing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tracker.insight import Flow
from tracker.lifecycle import MAIN_PATH, Status

Point = tuple[float, float]
#: A cubic Bézier curve: start, two control points, end.
Segment = tuple[Point, Point, Point, Point]
#: x, y, width, height.
Rect = tuple[float, float, float, float]
Cell = tuple[int, int]

#: Where each status sits (column, row): the main path on two rows, detours below.
LAYOUT: dict[str, Cell] = {
    **{status.value: (i, 0) for i, status in enumerate(MAIN_PATH[:5])},
    **{status.value: (4 - i, 1) for i, status in enumerate(MAIN_PATH[5:])},
    Status.BLOCKED.value: (0, 2),
    Status.BLOCKED_WIM.value: (1, 2),
    Status.PRE_INSTALLED.value: (2, 2),
    Status.CANCELLED.value: (3, 2),
}
#: Statuses the provider added are drawn in a last column, at most this many.
EXTRA_ROWS = 3
NODE_W, NODE_H = 120, 34
CELL_W, CELL_H = 160, 110
#: The gap between two boxes of a row: wide enough for a count of four digits.
GAP = CELL_W - NODE_W
#: How far short of a box an arrow's tip stops.
TIP = 3
LABEL_H = 15.0
#: Where along an arrow (0: start, 1: end) its label may go, in order of preference.
SPOTS = (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82)
#: Room around the drawing for arrowheads and thick strokes.
MARGIN = 8


def node_rect(cell: Cell) -> Rect:
    """The box of the status at ``cell``."""
    column, row = cell
    return GAP + column * CELL_W, row * CELL_H, NODE_W, NODE_H


def _centre_x(cell: Cell) -> float:
    return GAP + cell[0] * CELL_W + NODE_W / 2


def _line(start: Point, end: Point) -> Segment:
    (x1, y1), (x2, y2) = start, end
    return (
        start,
        (x1 + (x2 - x1) / 3, y1 + (y2 - y1) / 3),
        (x2 - (x2 - x1) / 3, y2 - (y2 - y1) / 3),
        end,
    )


def _same_row(a: Cell, b: Cell, both_ways: bool) -> list[Segment]:
    """Straight across the gap to a neighbour; an arc over (rightwards) or under the row."""
    x1, y1, _w, _h = node_rect(a)
    x2 = node_rect(b)[0]
    sign = 1 if b[0] > a[0] else -1
    if abs(b[0] - a[0]) == 1:
        y = y1 + NODE_H / 2 - (sign * 9 if both_ways else 0)
        start = x1 + NODE_W if sign > 0 else x1
        end = x2 - TIP if sign > 0 else x2 + NODE_W + TIP
        return [_line((start, y), (end, y))]
    out = -sign  # rightwards above the row (y grows downwards), leftwards below it
    edge = y1 if sign > 0 else y1 + NODE_H
    lift = out * (24 + 8 * abs(b[0] - a[0]))
    sx, ex = _centre_x(a) + sign * NODE_W / 4, _centre_x(b) - sign * NODE_W / 4
    return [((sx, edge), (sx, edge + lift), (ex, edge + out * TIP + lift), (ex, edge + out * TIP))]


def _next_row(a: Cell, b: Cell, both_ways: bool) -> list[Segment]:
    """From the bottom (top) edge to the top (bottom) edge of a box on the next row down (up),
    the curve staying in the space between the rows."""
    down = b[1] > a[1]
    sy = node_rect(a)[1] + (NODE_H if down else 0)
    ey = node_rect(b)[1] + (-TIP if down else NODE_H + TIP)
    shift = max(-2, min(2, b[0] - a[0])) * NODE_W / 6
    sx, ex = _centre_x(a) + shift, _centre_x(b) - shift
    if shift == 0 and both_ways:
        sx = ex = sx + (-10 if down else 10)
    mid = (sy + ey) / 2
    return [((sx, sy), (sx, mid), (ex, mid), (ex, ey))]


def _channel(a: Cell, b: Cell, columns: int) -> int:
    """The gap (0: left of the first column) an arrow across a row runs in: the nearest to
    the middle of its ends."""
    middle = (_centre_x(a) + _centre_x(b)) / 2
    return min(range(columns + 1), key=lambda k: (abs(GAP / 2 + k * CELL_W - middle), k))


def _across_rows(a: Cell, b: Cell, x: float) -> list[Segment]:
    """Into the space below (above) the first box, down (up) the gap at ``x`` past the rows
    between, and into the last box's top (bottom) edge."""
    down = b[1] > a[1]
    step = 1 if down else -1
    sy = node_rect(a)[1] + (NODE_H if down else 0)
    ey = node_rect(b)[1] + (-TIP if down else NODE_H + TIP)
    first, last = node_rect((0, a[1] + step))[1], node_rect((0, b[1] - step))[1]
    enter = first if down else first + NODE_H
    leave = last + NODE_H if down else last
    reach = NODE_W / 3
    sx = _centre_x(a) + max(-reach, min(reach, x - _centre_x(a)))
    ex = _centre_x(b) + max(-reach, min(reach, x - _centre_x(b)))
    into, out = (sy + enter) / 2, (leave + ey) / 2
    return [
        ((sx, sy), (sx, into), (x, into), (x, enter)),
        _line((x, enter), (x, leave)),
        ((x, leave), (x, out), (ex, out), (ex, ey)),
    ]


def routes(cells: Sequence[tuple[Cell, Cell]], columns: int) -> list[list[Segment]]:
    """Each arrow's path, for arrows between the given cells (in that order)."""
    pairs = set(cells)
    lanes: dict[int, list[int]] = {}
    for i, (a, b) in enumerate(cells):
        if abs(b[1] - a[1]) >= 2:
            lanes.setdefault(_channel(a, b, columns), []).append(i)
    lane_x: dict[int, float] = {}
    for channel, members in lanes.items():
        members.sort(key=lambda i: (_centre_x(cells[i][0]), _centre_x(cells[i][1]), i))
        spacing = min(8.0, (GAP - 16) / max(len(members) - 1, 1))
        for k, i in enumerate(members):
            lane_x[i] = GAP / 2 + channel * CELL_W + (k - (len(members) - 1) / 2) * spacing
    found = []
    for i, (a, b) in enumerate(cells):
        both_ways = (b, a) in pairs
        if a[1] == b[1]:
            found.append(_same_row(a, b, both_ways))
        elif abs(b[1] - a[1]) == 1:
            found.append(_next_row(a, b, both_ways))
        else:
            found.append(_across_rows(a, b, lane_x[i]))
    return found


def point_at(path: Sequence[Segment], u: float) -> Point:
    """The point of ``path`` at ``u`` (0: start, 1: end; each segment an equal share)."""
    index = min(int(u * len(path)), len(path) - 1)
    t = u * len(path) - index
    p0, p1, p2, p3 = path[index]
    a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    return (
        a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0],
        a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1],
    )


def samples(path: Sequence[Segment], per_segment: int = 40) -> Iterator[Point]:
    """Points along ``path``, close enough to tell whether it enters a box."""
    steps = per_segment * len(path)
    for i in range(steps + 1):
        yield point_at(path, i / steps)


def overlap(one: Rect, other: Rect, room: float = 0.0) -> bool:
    """Whether two rectangles overlap (``room``: by more than that much)."""
    return (
        one[0] + room < other[0] + other[2]
        and other[0] + room < one[0] + one[2]
        and one[1] + room < other[1] + other[3]
        and other[1] + room < one[1] + one[3]
    )


def _spots(path: Sequence[Segment], width: float, boxes: Sequence[Rect]) -> list[Rect]:
    """Where along ``path`` its label may go without covering a box (the middle if nowhere)."""
    spots: list[Rect] = []
    for u in SPOTS:
        x, y = point_at(path, u)
        spots.append((x - width / 2, y - LABEL_H / 2, width, LABEL_H))
    return [r for r in spots if not any(overlap(r, box, -1) for box in boxes)] or spots[:1]


def _covers(spot: Rect, trace: Sequence[Point]) -> bool:
    x0, y0, w, h = spot
    return any(x0 < x < x0 + w and y0 < y < y0 + h for x, y in trace)


def _labels(
    paths: Sequence[Sequence[Segment]], widths: Sequence[float], boxes: Sequence[Rect]
) -> list[Rect]:
    """Each arrow's label: on its arrow, covering no box; where it can, no other label and no
    other arrow. The arrows with the fewest places choose first (a count between neighbours
    has one: the gap's middle)."""
    spots = [_spots(path, width, boxes) for path, width in zip(paths, widths, strict=True)]
    traces = [list(samples(path, 12)) for path in paths]
    taken: dict[int, Rect] = {}
    for i in sorted(range(len(paths)), key=lambda i: (len(spots[i]), i)):
        free = [r for r in spots[i] if not any(overlap(r, t) for t in taken.values())]
        clear = [r for r in free if not any(_covers(r, t) for j, t in enumerate(traces) if j != i)]
        taken[i] = (clear or free or spots[i])[0]
    return [taken[i] for i in range(len(paths))]


def _d(path: Sequence[Segment]) -> str:
    """The SVG path data of ``path``."""
    curves = (
        f"C{a:.1f},{b:.1f} {c:.1f},{d:.1f} {e:.1f},{f:.1f}" for _, (a, b), (c, d), (e, f) in path
    )
    return "M{:.1f},{:.1f} ".format(*path[0][0]) + " ".join(curves)


def flow_chart(moves: Sequence[Flow]) -> dict[str, Any]:
    """The boxes, the arrows (path, width, count and its label) and the drawing's viewBox."""
    extra = sorted({s for m in moves for s in (m.from_status, m.to_status)} - set(LAYOUT))
    cell = dict(LAYOUT) | {status: (5, i) for i, status in enumerate(extra[:EXTRA_ROWS])}
    columns = 6 if extra else 5
    shown = [m for m in moves if m.from_status in cell and m.to_status in cell]
    boxes = [node_rect(c) for c in cell.values()]
    paths = routes([(cell[m.from_status], cell[m.to_status]) for m in shown], columns)
    top = max((m.count for m in shown), default=1)
    labels = _labels(paths, [8 + 7 * len(str(m.count)) for m in shown], boxes)
    arrows = [
        {
            "d": _d(path),
            "width": 1 + 4 * move.count / top,
            "label": labels[i],
            "count": move.count,
            "from": move.from_status,
            "to": move.to_status,
            "title": f"{move.from_status} → {move.to_status}: {move.count}",
        }
        for i, (move, path) in enumerate(zip(shown, paths, strict=True))
    ]
    points = [p for path in paths for p in samples(path, 8)]
    for x, y, w, h in [*boxes, *labels]:
        points += [(x, y), (x + w, y + h)]
    left, right = min(x for x, _ in points) - MARGIN, max(x for x, _ in points) + MARGIN
    high, low = min(y for _, y in points) - MARGIN, max(y for _, y in points) + MARGIN
    return {
        "nodes": [{"x": r[0], "y": r[1], "label": s} for s, r in zip(cell, boxes, strict=True)],
        "arrows": arrows,
        "view_box": f"{left:.0f} {high:.0f} {right - left:.0f} {low - high:.0f}",
        "node_w": NODE_W,
        "node_h": NODE_H,
    }
