"""An output column computed per row from aggregates of the segment below and summed over few rows
(a carrier's share of the day's cost, ``carrier_cost / SUM(carrier_cost) OVER (PARTITION BY day)``),
split into parts that the aggregates' own attribution below explains.

Why: its rows are the groups of the aggregation below, a few dozen. One carrier's cost x100 moved
its summed daily share by 300 run-to-run sds, which is 1.4 sds of the spread between its 36 rows,
and no test of 36 values tells that change; over the shipments below it is plain. The chain rule
carries it up: the target T is a function of the rows' aggregates S, so its move is
sum_r w_r (S_r' - S_r), w_r the derivative of T along the straight path between the runs'
aggregates (integrated gradients, a six-point quadrature), taken through the outer segment's own
model (its windows and expressions, ``attribution.metric_at``). The rows of positive weight, and
those of negative weight, are each a slice of the units below, whose attribution there, scaled to
its part, explains that part. A row whose value has no limit as its aggregates go to nothing (the
shares of a day that is missing, 0 / 0), and a row of the current run only, are parts of their own.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .attribution import FittedModel, metric_at, unit_contributions

_X, _W = np.polynomial.legendre.leggauss(6)
_T, _TW = (_X + 1) / 2, _W / 2  # the quadrature on [0, 1]
MAX_ROWS = 500  # derivatives are taken row by row: for the few rows that need them


@dataclasses.dataclass(frozen=True)
class Part:
    """``value`` of the target's move, made by the groups ``rows`` (key tuples) of ``aggregate``
    below; ``weight`` is what one unit of that aggregate's sum over them is worth in the target
    (their mean derivative, weighted by how far each row's aggregate moved)."""

    aggregate: str
    rows: tuple[tuple, ...]
    value: float
    weight: float


def parts(model: FittedModel, aggregates: list[str], keys_b: list[tuple], keys_c: list[tuple]
          ) -> tuple[list[Part], float] | None:
    """The parts of the sum's move over the outer units of ``model`` (its baseline run the
    reference), whose root columns ``aggregates`` are sums or counts of the segment below, the
    units named by their group keys (``keys_b``, ``keys_c``: one tuple per unit of each run); and
    what the parts leave of the move. None when the units are not one per key, too many, or when
    the target is no smooth function of the aggregates (a CASE on a total: the quadrature misses
    the step), so that the parts would not add up to the move."""
    b, c = model.baseline, model.current
    if model.reversed or not aggregates or len(keys_b) != b.n or len(keys_c) != c.n or \
            len(set(keys_b)) != b.n or len(set(keys_c)) != c.n or max(b.n, c.n) > MAX_ROWS:
        return None
    pos = {k: i for i, k in enumerate(keys_b)}
    at = np.array([pos.get(k, -1) for k in keys_c], dtype=int)
    start = {a: np.asarray(b.values[a], dtype=float) for a in aggregates}
    end = {a: np.zeros(b.n) for a in aggregates}  # a group the current run lacks sums to nothing
    for a in aggregates:
        end[a][at[at >= 0]] = np.asarray(c.values[a], dtype=float)[at >= 0]
    if not all(np.isfinite(v).all() for v in list(start.values()) + list(end.values())):
        return None
    t_b, c_b, ok_b = metric_at(model, start)
    t_end, c_end, ok_end = metric_at(model, end)
    # rows whose value vanished with their aggregates: held where they were on the path
    jump = ok_b & ~ok_end
    path = {a: np.where(jump, start[a], end[a]) for a in aggregates}
    moved = {a: path[a] - start[a] for a in aggregates}
    grad = {a: np.zeros(b.n) for a in aggregates}
    scale = {a: max(float(np.abs(np.concatenate([start[a], end[a]])).mean()), 1e-12) for a in aggregates}
    for t, wt in zip(_T, _TW):
        here = {a: start[a] + t * moved[a] for a in aggregates}
        value = metric_at(model, here)[0]
        for a in aggregates:
            for r in np.flatnonzero(~jump):
                h = 1e-6 * max(abs(here[a][r]), scale[a])
                bumped = here[a].copy()
                bumped[r] += h
                grad[a][r] += wt * (metric_at(model, {**here, a: bumped})[0] - value) / h
    lost = -float(c_b[jump].sum())
    linear = sum(float((grad[a] * moved[a]).sum()) for a in aggregates)
    along = (t_end - t_b) - float((c_end - c_b)[jump].sum())  # the path's own move, the vanished rows apart
    now = unit_contributions(model, "current")
    change = float(now.sum() - unit_contributions(model, "baseline").sum())
    if not np.isfinite(linear) or abs(linear - along) > 0.05 * abs(change) + 1e-9 * (abs(t_b) + abs(t_end)):
        return None
    new = np.flatnonzero(at < 0)
    gained = float(now[new].sum())
    found: list[Part] = []
    for a in aggregates:
        g, m = grad[a], moved[a]
        tol = 1e-9 * float(np.abs(g).max() or 1.0)
        for side in (g > tol, g < -tol):
            rows = np.flatnonzero(side & ~jump)
            if not len(rows):
                continue
            spread = np.abs(m[rows])
            weight = float((g[rows] * spread).sum() / spread.sum()) if spread.sum() else float(g[rows].mean())
            found.append(Part(a, tuple(keys_b[r] for r in rows), float((g[rows] * m[rows]).sum()), weight))
    first = aggregates[0]
    for rows, keys, value, total in (
            (np.flatnonzero(jump), keys_b, lost, -float(start[first][jump].sum())),
            (new, keys_c, gained, float(np.asarray(c.values[first], dtype=float)[new].sum()))):
        if len(rows) and value:
            found.append(Part(first, tuple(keys[r] for r in rows), value, value / total if total else 0.0))
    left = change - linear - lost - gained
    if abs(left) > 0.5 * abs(change):
        return None
    return found, left
