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

How the model is reached: :func:`spark_causal.attribution.attribute_samples` builds the segment model
(``_Spec``), fits it (``_Fitted``) and evaluates coalitions (``_evaluate``) but exposes none of them.
While :func:`what_if` runs, it briefly wraps the two private names ``_Fitted`` and ``_shapley`` of that
module to record the model the attribution built (under a lock, and only in the calling thread; every
other caller passes straight through), then evaluates its own coalitions with ``_evaluate``. A public
``build_model``/``evaluate`` pair in ``attribution`` would make this interception unnecessary.
"""
from __future__ import annotations

import dataclasses
import html
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import attribution as _A
from .errors import SparkCausalError, UnknownOutputError
from .result import _clean, _fmt

if TYPE_CHECKING:
    import networkx as nx

    from .attribution import AttributionConfig, RunSamples
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
        name = self.target.rsplit(".", 1)[-1]
        if self.agg != "sum":
            name = f"{self.agg}({name})"
        if self.where:
            name = f"{name} where {self.where}"
        return name

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

    return _run(lambda cfg: compare.attribute(store, baseline, current, target, agg, where, spark=spark,
                                              config=cfg),
                target, revert, agg, where, config)


def what_if_samples(graph: nx.DiGraph, baseline: RunSamples, current: RunSamples, target: str, *,
                    revert: list[str], agg: str = "sum", where: str | None = None,
                    config: AttributionConfig | None = None) -> WhatIf:
    """:func:`what_if` on sample tables already in memory (the inputs of ``attribute_samples``)."""
    return _run(lambda cfg: _A.attribute_samples(graph, baseline, current, target, agg=agg, where=where,
                                                 config=cfg),
                target, revert, agg, where, config)


# ---------------------------------------------------------------- the computation


@dataclass
class _Model:
    spec: Any = None
    b: Any = None
    c: Any = None


_lock = threading.Lock()
_local = threading.local()


def _recorded_model(attribute_fn: Any, cfg: AttributionConfig) -> tuple[Any, _Model]:
    """Run the attribution and keep the model specification and unit tables it fitted."""
    rec = _Model()
    fitted_orig = _A._Fitted

    def fitted(spec, b, c, cfg_, rng):
        if getattr(_local, "recording", None) is rec:
            rec.spec, rec.b, rec.c = spec, b, c  # the last fit (after any refit) is the model's
        return fitted_orig(spec, b, c, cfg_, rng)

    with _lock:
        _A._Fitted = fitted  # type: ignore[assignment,misc]
        _local.recording = rec
        try:
            result = attribute_fn(cfg)
        finally:
            _A._Fitted = fitted_orig  # type: ignore[misc]
            _local.recording = None
    if rec.spec is None:
        raise SparkCausalError("the attribution model could not be inspected for a what-if",
                               hint="this spark-causal version changed its attribution internals; report it")
    return result, rec


def _reversed(spec: Any) -> Any:
    """The same model with the roles of the runs swapped: tag ``b`` is the current run's code."""
    det = {k: dataclasses.replace(d, fn={"b": d.fn.get("c"), "c": d.fn.get("b")}) for k, d in spec.det.items()}
    return dataclasses.replace(spec, det=det)


def _run(attribute_fn: Any, target: str, revert: list[str] | tuple[str, ...] | str, agg: str,
         where: str | None, config: AttributionConfig | None) -> WhatIf:
    if isinstance(revert, str):
        revert = [revert]
    revert = list(dict.fromkeys(str(r) for r in revert))
    cfg = config or _A.AttributionConfig()
    # the attribution's own bootstrap is not needed: the what-if has its own
    result, m = _recorded_model(attribute_fn, dataclasses.replace(cfg, n_bootstrap=0))
    mechanisms = {r.name for r in m.spec.roots} | set(m.spec.lookups) | set(m.spec.det)
    details = result.details or {}
    volume_id = f"{details.get('driving')}.__rows__"
    unknown = [r for r in revert if r not in mechanisms and r != volume_id]
    if unknown:
        known = sorted(mechanisms) + ([volume_id] if result.agg != "mean" else [])
        raise UnknownOutputError(
            f"cannot revert {', '.join(unknown)}: not a mechanism of {target}'s model",
            hint=f"revert one of: {', '.join(known)}")
    warnings: list[str] = []
    per_row = result.agg != "mean"
    if volume_id in revert and not per_row:
        warnings.append("a mean does not depend on the volume of rows: reverting it changes nothing")
    R = frozenset(r for r in revert if r in mechanisms)
    rows = details.get("rows") or {}
    n_b, n_c = float(rows.get("baseline") or 0.0), float(rows.get("current") or 0.0)
    n_new = n_b if (volume_id in revert and per_row) else n_c
    spec = _reversed(m.spec)
    recorded = m.c.recorded is not None and result.agg == "sum" and spec.where_fn is None

    def counterfactual(cur: Any, base: Any, rng: Any) -> float:
        """The current units, the reverted mechanisms switched to the baseline's, the rest as they are."""
        con, den = _A._contrib(spec, cur.values, cur.n)
        observed = _A._metric_from(spec, cur.recorded if recorded else con, den, cur.w)
        delta = 0.0
        if R:
            fit = _A._Fitted(spec, cur, base, cfg, rng)  # tag b: the current run, tag c: the baseline
            delta = _A._evaluate(spec, fit, cur, R) - _A._evaluate(spec, fit, cur, frozenset())
        value = observed + delta
        return n_new * value if per_row else value

    rng = np.random.default_rng([cfg.seed, 7919])
    point = counterfactual(m.c, m.b, rng) if revert else float(result.current_value)
    # bootstrap: units resampled in both runs, the model refitted on each replicate
    boots: list[float] = []
    for _ in range(cfg.n_bootstrap if revert else 0):
        ib, ic = rng.integers(0, m.b.n, m.b.n), rng.integers(0, m.c.n, m.c.n)
        try:
            boots.append(counterfactual(m.c.take(ic), m.b.take(ib), rng))
        except Exception:  # noqa: BLE001 - a degenerate resample: skip it, as the attribution does
            continue
    lo = hi = point
    if len(boots) >= 3:
        q = (1 - cfg.ci_level) / 2
        lo_b, hi_b = np.quantile(np.asarray(boots, float), [q, 1 - q])
        lo, hi = float(min(lo_b, point)), float(max(hi_b, point))
    elif revert and cfg.n_bootstrap:
        warnings.append("too few bootstrap replicates succeeded for an interval")
    players = set(details.get("players") or [])
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

