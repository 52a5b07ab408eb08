"""What if: the metric of the current run had some sources or stages kept their baseline mechanism.

    >>> w = what_if("./store", "2026-11-23", "2026-11-24", "revenue.revenue", revert=["fx.rate"])  # doctest: +SKIP
    >>> print(w.summary())                                                                        # doctest: +SKIP
    If fx.rate had its baseline mechanism, revenue would be 240,114 [236,020, 244,870] instead of ...

The answer comes from the same fitted model as the attribution (:mod:`spark_causal.attribution`):
every mechanism (a source table's conditional distributions, a lookup through a joined table, a
stage's code) is fitted on both runs, and a coalition of mechanisms can be switched between their
baseline and current versions while every sampled unit keeps its own random draws (common random
numbers). With ``M`` the mechanisms that changed, plus the reverted ones, and ``R`` the reverted ones::

    counterfactual = N' * (m_current + v(M \\ R) - v(M))

where ``v(S)`` is the model's metric per driving row with the mechanisms of ``S`` in their current
version and the others in their baseline version, ``m_current`` the current run's metric per driving
row and ``N'`` the current run's number of driving rows (the baseline's when the volume term
``<driving table>.__rows__`` is reverted; a mean ignores it). The model's estimate of the effect of
reverting is thus added to the observed current value, so reverting nothing gives the current value
exactly and reverting every changed mechanism gives the baseline value up to the part of the change
the model leaves unexplained. The interval comes from bootstrap replicates (units resampled in both
runs, the model refitted on each).

How the model is reached: :func:`spark_causal.attribution.fit_model` builds and fits the segment
model exactly as the attribution does (same seed, same change tests), :func:`~spark_causal.attribution.refit`
fits it again with the runs' roles swapped (the current run's units as the reference) and
:func:`~spark_causal.attribution.evaluate` gives ``v`` for a coalition. The attribution itself (without
its bootstrap) supplies the observed values and the mechanisms that changed.
"""
from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import attribution as _A
from .errors import UnknownOutputError
from .result import _clean, _fmt, _metric_name

if TYPE_CHECKING:
    import networkx as nx

    from .attribution import AttributionConfig, FittedModel, RunSamples
    from .result import Attribution
    from .store import Store

__all__ = ["WhatIf", "what_if", "what_if_samples"]


@dataclass(frozen=True)
class WhatIf:
    """The answer to "what would ``agg(target)`` be in the current run if ``reverted`` had their
    baseline mechanism?" in the metric's own units, with a bootstrap interval."""

    target: str
    baseline_value: float
    current_value: float
    counterfactual_value: float
    ci_low: float
    ci_high: float
    reverted: tuple[str, ...]
    agg: str = "sum"
    where: str | None = None
    baseline_run: str = ""
    current_run: str = ""
    changed: tuple[str, ...] = ()
    """The mechanisms that changed significantly between the runs (what may be worth reverting)."""
    warnings: tuple[str, ...] = ()
    seed: int = 0
    n_bootstrap: int = 0

    @property
    def effect(self) -> float:
        """Counterfactual minus current: what reverting would change."""
        return self.counterfactual_value - self.current_value

    @property
    def metric_name(self) -> str:
        """The metric's short name, as :class:`~spark_causal.result.Attribution` names it."""
        return _metric_name(self.target, self.agg, self.where)

    def summary(self) -> str:
        """One sentence: ``If fx.rate had its baseline mechanism, revenue would be ...``."""
        names = [f"the volume ({r})" if r.endswith(".__rows__") else r for r in self.reverted]
        what = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else (names or ["nothing"])[0]
        verb = "had their baseline mechanisms" if len(names) > 1 else "had its baseline mechanism"
        ci = ""
        if self.ci_high > self.ci_low:
            ci = f" [{_fmt(self.ci_low)}, {_fmt(self.ci_high)}]"
        return (f"If {what} {verb}, {self.metric_name} would be "
                f"{_fmt(self.counterfactual_value)}{ci} instead of {_fmt(self.current_value)} "
                f"(baseline {_fmt(self.baseline_value)}; effect {_fmt(self.effect, signed=True)}).")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["effect"] = self.effect
        return _clean(d)

    def _repr_html_(self) -> str:
        e = html.escape
        return (f"<div class='spark-causal-whatif'><p><b>{e(self.summary())}</b></p>"
                + "".join(f"<p><i>{e(w)}</i></p>" for w in self.warnings) + "</div>")

    def __str__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------- entry points


def what_if(store: str | Store, baseline: str, current: str, target: str, *, revert: list[str],
            agg: str = "sum", where: str | None = None, config: AttributionConfig | None = None,
            spark: Any = None) -> WhatIf:
    """What would ``agg(target)`` be in run ``current`` if the mechanisms in ``revert`` (node ids of
    sources or stages, or ``<driving table>.__rows__`` for the volume) had their ``baseline`` version?

    Node ids are those of :func:`spark_causal.attribute`'s table. The runs are read and checked as
    for an attribution; ``config`` sets the seed and the number of bootstrap replicates.
    """
    from . import compare

    b, c = compare.load_pair(store, baseline, current, target, agg, spark=spark)  # the same refusals
    return what_if_samples(c.graph, b, c, target, revert=revert, agg=agg, where=where, config=config)


def what_if_samples(graph: nx.DiGraph, baseline: RunSamples, current: RunSamples, target: str, *,
                    revert: list[str], agg: str = "sum", where: str | None = None,
                    config: AttributionConfig | None = None) -> WhatIf:
    """:func:`what_if` on sample tables already in memory (the inputs of ``attribute_samples``)."""
    cfg = config or _A.AttributionConfig()
    result = _A.attribute_samples(graph, baseline, current, target, agg=agg, where=where,
                                  config=dataclasses.replace(cfg, n_bootstrap=0))
    model = _A.fit_model(graph, baseline, current, target, agg=agg, where=where, config=cfg)
    return _answer(result, model, target, revert, where, cfg)


# ---------------------------------------------------------------- the computation


def _answer(result: Attribution, model: FittedModel, target: str, revert: list[str] | tuple[str, ...] | str,
            where: str | None, cfg: AttributionConfig) -> WhatIf:
    """The counterfactual of ``revert`` from the attribution ``result`` and its fitted ``model``."""
    if isinstance(revert, str):
        revert = [revert]
    revert = list(dict.fromkeys(str(r) for r in revert))
    mechanisms = set(model.mechanism_ids)
    volume_id = model.volume_id
    unknown = [r for r in revert if r not in mechanisms and r != volume_id]
    if unknown:
        known = sorted(mechanisms) + ([volume_id] if model.agg != "mean" else [])
        raise UnknownOutputError(
            f"cannot revert {', '.join(unknown)}: not a mechanism of {target}'s model",
            hint=f"revert one of: {', '.join(known)}")
    warnings: list[str] = []
    per_row = model.agg != "mean"
    if volume_id in revert and not per_row:
        warnings.append("a mean does not depend on the volume of rows: reverting it changes nothing")
    R = frozenset(r for r in revert if r in mechanisms)
    n_new = model.baseline.N if (volume_id in revert and per_row) else model.current.N

    def counterfactual(ib: np.ndarray | None, ic: np.ndarray | None, rng: np.random.Generator) -> float:
        """The current units, the reverted mechanisms switched to the baseline's, the rest as they are."""
        if R:
            # the current run is the reference: v(R) has R in its baseline version
            rev = _A.refit(model, baseline=ib, current=ic, reverse=True, rng=rng)
            delta = _A.evaluate(rev, R) - _A.evaluate(rev, frozenset())
            value = _A.observed_metric(rev, "current") + delta
        else:
            cur = model if ic is None else dataclasses.replace(model, current=model.current.take(ic))
            value = _A.observed_metric(cur, "current")
        return n_new * value if per_row else value

    rng = np.random.default_rng([cfg.seed, 7919])
    point = counterfactual(None, None, rng) if revert else float(result.current_value)
    # bootstrap: units resampled in both runs, the model refitted on each replicate
    boots: list[float] = []
    n_b, n_c = model.baseline.n, model.current.n
    for _ in range(cfg.n_bootstrap if revert else 0):
        ib, ic = rng.integers(0, n_b, n_b), rng.integers(0, n_c, n_c)
        try:
            boots.append(counterfactual(ib, ic, rng))
        except Exception:  # noqa: BLE001 - a degenerate resample: skip it, as the attribution does
            continue
    lo = hi = point
    if len(boots) >= 3:
        q = (1 - cfg.ci_level) / 2
        lo_b, hi_b = np.quantile(np.asarray(boots, float), [q, 1 - q])
        lo, hi = float(min(lo_b, point)), float(max(hi_b, point))
    elif revert and cfg.n_bootstrap:
        warnings.append("too few bootstrap replicates succeeded for an interval")
    players = set((result.details or {}).get("players") or [])
    unchanged = sorted(R - players)
    if unchanged:
        warnings.append(f"{', '.join(unchanged)} did not change significantly between the runs: reverting "
                        "it only moves the metric within sampling noise")
    return WhatIf(target=target, baseline_value=float(result.baseline_value),
                  current_value=float(result.current_value), counterfactual_value=float(point),
                  ci_low=lo, ci_high=hi, reverted=tuple(revert), agg=result.agg, where=where,
                  baseline_run=result.baseline_run, current_run=result.current_run,
                  changed=tuple(sorted(players)), warnings=tuple(warnings), seed=cfg.seed,
                  n_bootstrap=cfg.n_bootstrap if revert else 0)
