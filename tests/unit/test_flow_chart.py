"""The flow diagram's geometry: arrows between any two statuses pass through no box, and each
count's label sits on its arrow without covering a box."""

from __future__ import annotations

import itertools

from tracker.insight import Flow
from tracker.lifecycle import Status
from tracker.web.flow_chart import (
    LAYOUT,
    Rect,
    flow_chart,
    node_rect,
    overlap,
    routes,
    samples,
)

STATUSES = [s.value for s in Status]
#: Statuses the provider added, drawn in the last column.
ADDED = ["on_hold_by_provider", "paused"]
CELLS = [*LAYOUT.values(), (5, 0), (5, 1), (5, 2)]


def inside(point: tuple[float, float], box: Rect) -> bool:
    """Whether ``point`` is inside ``box`` by more than half a unit."""
    x, y = point
    return box[0] + 0.5 < x < box[0] + box[2] - 0.5 and box[1] + 0.5 < y < box[1] + box[3] - 0.5


def rect_of(node: dict[str, float]) -> Rect:
    """A drawn box's rectangle."""
    return (node["x"], node["y"], *node_rect((0, 0))[2:])


class TestRoutes:
    """Every possible arrow keeps out of every box, its own included."""

    def test_every_pair_alone(self) -> None:
        """Each of the 17 x 16 moves between cells, drawn alone, enters no box."""
        boxes = [node_rect(c) for c in CELLS]
        for a, b in itertools.permutations(CELLS, 2):
            (path,) = routes([(a, b)], 6)
            for point in samples(path):
                assert not any(inside(point, box) for box in boxes), (a, b, point)

    def test_all_pairs_at_once(self) -> None:
        """All moves drawn together (both ways, shared gaps) still enter no box."""
        boxes = [node_rect(c) for c in CELLS]
        for path in routes(list(itertools.permutations(CELLS, 2)), 6):
            for point in samples(path):
                assert not any(inside(point, box) for box in boxes)


class TestChart:
    """The drawing the page gets: every move with its count, labels clear of the boxes."""

    def test_labels_on_arrows_clear_of_boxes(self) -> None:
        """A main-path day's moves: one label per arrow, none over a box or another label."""
        pairs = [
            *itertools.pairwise(STATUSES[:10]),
            ("ordered", "cancelled"),
            ("checked", "blocked_wim"),
            ("blocked_wim", "checked"),
            ("waiting", "on_hold_by_provider"),
            ("installation_planning", "installation_finished"),
            ("intended", "cancelled"),
            ("blocked", "ordered"),
            ("ordered", "blocked"),
        ]
        moves = [
            Flow(from_status=a, to_status=b, provider=None, count=7 * i + 1)
            for i, (a, b) in enumerate(pairs)
        ]
        chart = flow_chart(moves)
        assert [a["count"] for a in chart["arrows"]] == [m.count for m in moves]
        boxes = [rect_of(n) for n in chart["nodes"]]
        labels = [a["label"] for a in chart["arrows"]]
        for label in labels:
            assert not any(overlap(label, box, -1) for box in boxes)
        for one, other in itertools.combinations(labels, 2):
            assert not overlap(one, other)

    def test_added_statuses_and_determinism(self) -> None:
        """Statuses the provider added get boxes of their own; the same moves draw the same."""
        moves = [
            Flow(from_status="ordered", to_status=ADDED[0], provider=None, count=3),
            Flow(from_status=ADDED[1], to_status="cancelled", provider=None, count=12),
        ]
        chart = flow_chart(moves)
        assert [n["label"] for n in chart["nodes"]][-2:] == ADDED
        assert chart == flow_chart(moves)
        assert flow_chart([])["arrows"] == []


class TestUnusual:
    """Large counts and many added statuses still draw: nothing raises, nothing is invented."""

    def test_large_counts_and_many_added_statuses(self) -> None:
        """Counts of seven digits get a label each; beyond three added statuses, boxes stop."""
        added = [f"added_{n}" for n in range(5)]
        moves = [
            Flow(from_status="ordered", to_status="checked", provider=None, count=1_234_567),
            *(
                Flow(from_status="ordered", to_status=status, provider=None, count=n + 1)
                for n, status in enumerate(added)
            ),
        ]
        chart = flow_chart(moves)
        labels = {node["label"] for node in chart["nodes"]}
        assert labels == {*STATUSES, *added[:3]}
        drawn = {(a["to"], a["count"]) for a in chart["arrows"]}
        assert drawn == {("checked", 1_234_567), ("added_0", 1), ("added_1", 2), ("added_2", 3)}
        assert all(len(a["label"]) == 4 for a in chart["arrows"])
