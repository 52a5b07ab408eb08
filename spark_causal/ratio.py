"""A ratio of two aggregates (``converted_sessions / sessions AS conversion_rate``), or a linear
combination of them (``revenue - cost AS margin``, ``ROUND(revenue / 1000, 1)``), attributed through
its parts.

Why: no unit holds a ratio computed after the aggregation, but its overall value over the output's
rows, R = A / B with A and B the sums of the two aggregate columns, moves exactly as

    R_c - R_b = ((A_c - A_b) - R_b (B_c - B_b)) / B_c

so each cause's share of the ratio's move is its share of the numerator's move less R_b times its
share of the denominator's, over today's denominator. A volume change that moves both in proportion
moves the ratio by nothing, and so gets nothing. The parts are attributed as any sum is (drill-down,
slices, exact values), and their items combined by that identity. A linear combination's total
(an average's overall value) is the same combination of its parts' totals, and so is each item.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

import networkx as nx
from scipy.stats import norm

from .result import Attribution, AttributionItem

_CAST = re.compile(r"CAST\(([^()]*)\s+AS\s+\w+(?:\(\d+(?:,\s*\d+)?\))?\)", re.IGNORECASE)
_WRAP = re.compile(r"(?:nullif|round|bround)\(((?:[^(),]|\([^()]*\))+),\s*[\d.]+\)", re.IGNORECASE)
_NAME = r"`?([A-Za-z_][\w]*)`?"
_QUALIFIED = re.compile(r"`?[A-Za-z_]\w*`?\.(`?[A-Za-z_]\w*`?)")
_DIVIDE = re.compile(rf"^(?:([\d.]+)\s*\*\s*)?{_NAME}\s*/\s*{_NAME}(?:\s*\*\s*([\d.]+))?$")


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``scale * numerator / denominator``: node ids of two sum or count aggregates."""

    numerator: str
    denominator: str
    scale: float = 1.0


def ratio_of(graph: nx.DiGraph, target: str, aggregates: dict[str, dict]) -> Ratio | None:
    """The ratio ``target`` computes: an aggregate whose parts lineage made nodes of their own
    (``SUM(a) / COUNT(*)`` in one expression), or a column whose expression is one aggregate column
    over another (casts, ``NULLIF(b, 0)``, ``ROUND(.., n)``, ``try_divide`` and a constant factor such
    as 100 allowed), both sums or counts of one segment (``aggregates``: node id -> its definition).
    None otherwise."""
    if target not in graph:
        return None
    parts = graph.nodes[target].get("ratio")  # one aggregate expression (``plan.ratio_of_sums``)
    if parts and all(p in aggregates for p in parts[:2]):
        return Ratio(parts[0], parts[1], float(parts[2]))
    if graph.nodes[target].get("kind") == "aggregate":
        return None
    text = str(graph.nodes[target].get("expr") or "")
    text = re.sub(r"try_divide\(([^(),]+),\s*([^(),]+)\)", r"(\1 / \2)", text, flags=re.IGNORECASE)
    for pattern in (_CAST, _WRAP):
        while (new := pattern.sub(r"\1", text)) != text:
            text = new
    text = _QUALIFIED.sub(r"\1", text).strip()  # ``rt.paid / prem.earned_premium``: the columns
    while text.startswith("(") and text.endswith(")") and text.count("(") == 1:
        text = text[1:-1].strip()
    text = text.replace("(", "").replace(")", "")
    m = _DIVIDE.match(text)
    if m is None:
        return None
    by_name = {str(graph.nodes[p].get("column") or p.rsplit(".", 1)[-1]).lower(): p for p in graph.predecessors(target)}
    num, den = by_name.get(m.group(2).lower()), by_name.get(m.group(3).lower())
    if num is None or den is None or num == den:
        return None
    if any(str((aggregates.get(x) or {}).get("fn", "")).lower() not in ("sum", "count") for x in (num, den)):
        return None
    scale = float(m.group(1) or 1.0) * float(m.group(4) or 1.0)
    return Ratio(num, den, scale)


def attribute_ratio(ratio: Ratio, target: str, part: Callable[[str], Attribution], alpha: float) -> Attribution:
    """The attribution of ``target`` (the ratio, over all of the slice's rows) from the attributions of
    its numerator and denominator (``part(node)``: that node's sum, attributed)."""
    a, b = part(ratio.numerator), part(ratio.denominator)
    if not (b.baseline_value and b.current_value):
        raise ZeroDivisionError(f"the denominator {ratio.denominator} sums to 0 in a run")
    k, rb = ratio.scale, a.baseline_value / b.baseline_value
    vb, vc = k * rb, k * a.current_value / b.current_value
    z = float(norm.ppf(1 - alpha / 2))

    # each cause's share: k (x - R_b y) / B_c of its numerator and denominator shares
    items, codes = _combined([(k / b.current_value, a), (-k * rb / b.current_value, b)])
    # the move's error: the parts' errors combined as if independent (a numerator and denominator that
    # move together make the true error smaller, so this errs quiet)
    # (the spread of the whole runs' exact parts when both have one: the exact ratio is judged by it)
    # (a part relayed to the units below, a sum over a read-back output's rows, by the runs' spread
    # there: its rows' spread between days and countries is ~25x that)
    whole = [(p.details or {}).get("se_below") or (p.details or {}).get("se_whole") for p in (a, b)]
    exact = all((p.details or {}).get("z_whole") is not None for p in (a, b))
    se = whole if exact and all(s is not None for s in whole) else [(p.details or {}).get("se_change") for p in (a, b)]
    se_ratio = k * math.hypot(se[0] or 0.0, rb * (se[1] or 0.0)) / b.current_value if all(
        s is not None for s in se) else None
    sig_metric = se_ratio is not None and abs(vc - vb) > z * se_ratio
    # judged by the runs' spread below, the ratio moved when it is beyond it and a part's own move is
    # significant (a US drift x1.2 moved revenue per session 9 sds, its item tested at p 0.015)
    below = exact and all((p.details or {}).get("se_below") is not None for p in (a, b))
    sig_item = any(i.mechanism_changed and i.contribution and (i.p_value == 0.0 or i.ci_low > 0 or i.ci_high < 0)
                   for i in items)
    # a certain change (changed code, a dimension row seen changed) that a significant part names and
    # that makes most of the ratio's move is one, whatever the parts' spread: the parts of a ratio of
    # an output read back are sums over its rows, whose spread between groups (days, countries) is no
    # run-to-run variation (a formula x0.7 cut revenue per session 31% at z 1.4). Not when that spread
    # is known: a bot filter's threshold moved revenue and sessions alike, and the difference of its two
    # shares, each with its sampling error, made "most" of a move of 1 sd
    certain = not below and any(p.significant for p in (a, b)) and any(
        i.kind != "volume" and i.mechanism_changed and i.p_value == 0.0 and (i.ci_low > 0 or i.ci_high < 0)
        and abs(i.contribution) >= 0.5 * abs(vc - vb) for i in items)
    details: dict[str, Any] = {"ratio": {"numerator": ratio.numerator, "denominator": ratio.denominator,
                                         "scale": ratio.scale},
                               "parts": {ratio.numerator: a.to_dict(), ratio.denominator: b.to_dict()},
                               "se_change": se_ratio}
    return Attribution(
        target=target, agg="mean", where=a.where, baseline_run=a.baseline_run, current_run=a.current_run,
        baseline_value=vb, current_value=vc, change=vc - vb, significant=bool(sig_metric and (sig_item or below and any(p.significant for p in (a, b))) or certain),
        attributions=items, code_changes=codes, seed=a.seed,
        unexplained=(vc - vb) - sum(i.contribution for i in items), details=details,
        warnings=[f"{target} is {ratio.numerator} / {ratio.denominator} per row: attributed as the ratio of "
                  f"their sums over the rows ({_pct(k)}the overall ratio), each cause's share of the "
                  "numerator's move less the baseline ratio times its share of the denominator's"]
        + [w for w in a.warnings + b.warnings])


def _pct(k: float) -> str:
    return "" if k == 1.0 else f"{k:g} x "


@dataclasses.dataclass(frozen=True)
class Linear:
    """``sum(k x part) + offset``: node ids of sum/count aggregates (or of averages) with their factors."""

    terms: tuple[tuple[str, float], ...]
    offset: float = 0.0
    mean: bool = False  # its parts are averages: the combination of their overall averages


def linear_of(graph: nx.DiGraph, target: str, aggregates: dict[str, dict]) -> Linear | None:
    """The linear combination of aggregates ``target`` computes after the aggregation (``linear`` in
    the graph, ``lineage``), when every part is held by a segment and all are sums and counts, or all
    averages. A sum's constant is added per group, which no unit holds: None then, as for anything else."""
    d = graph.nodes[target] if target in graph else {}
    if d.get("kind") == "aggregate" or not d.get("linear"):
        return None
    terms = tuple((str(n), float(k)) for n, k in d["linear"])
    fns = {str((aggregates.get(n) or {}).get("fn", "")).lower() for n, _ in terms}
    if not all(n in aggregates for n, _ in terms) or not (fns <= {"sum", "count"} or fns == {"avg"}):
        return None
    offset = float(d.get("offset") or 0.0)
    if offset and fns != {"avg"}:
        return None
    return Linear(terms, offset, fns == {"avg"})


def attribute_linear(lin: Linear, target: str, part: Callable[[str], Attribution], alpha: float) -> Attribution:
    """The attribution of ``target`` from the attributions of its parts (``part(node)``: that node's sum,
    or overall average), each item the same combination of the parts' items. Its spread combines the
    parts' as if independent (a margin's revenue and cost move together: this errs quiet); one part
    scaled keeps that part's own verdict."""
    parts = [(k, part(n)) for n, k in lin.terms]
    z = float(norm.ppf(1 - alpha / 2))

    def combined(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else math.sqrt(sum(
            (k * v) ** 2 for (k, _), v in zip(parts, values)))

    ranked, codes = _combined(parts)
    vb = sum(k * a.baseline_value for k, a in parts) + lin.offset
    vc = sum(k * a.current_value for k, a in parts) + lin.offset
    se_change = combined([(a.details or {}).get("se_change") for _, a in parts])
    exact = all((a.details or {}).get("z_whole") is not None for _, a in parts)  # judged by exact figures
    se_whole = combined([(a.details or {}).get("se_whole") for _, a in parts]) if exact else None
    z_whole = (vc - vb) / se_whole if se_whole else None
    if len(parts) == 1:
        significant = parts[0][1].significant
    else:
        spread = se_whole if se_whole else se_change
        significant = bool(spread is not None and abs(vc - vb) > z * spread and any(a.significant for _, a in parts))
    first = parts[0][1]
    formula = " ".join(f"{'-' if k < 0 else '+'} {'' if abs(k) == 1 else f'{abs(k):g} x '}{n}"
                       for n, k in lin.terms).lstrip("+ ") + (f" {'-' if lin.offset < 0 else '+'} {abs(lin.offset):g}"
                                                               if lin.offset else "")
    return Attribution(
        target=target, agg="mean" if lin.mean else "sum", where=first.where, baseline_run=first.baseline_run,
        current_run=first.current_run, baseline_value=vb, current_value=vc, change=vc - vb,
        significant=significant, attributions=ranked,
        code_changes=codes, seed=first.seed,
        unexplained=(vc - vb) - sum(i.contribution for i in ranked),
        details={"linear": {"terms": dict(lin.terms), "offset": lin.offset}, "se_change": se_change,
                 "se_whole": se_whole, "z_whole": z_whole,
                 "parts": {n: a.to_dict() for (n, _), (_, a) in zip(lin.terms, parts)}},
        warnings=[f"{target} is {formula} per row: attributed as that combination of their "
                  f"{'overall averages' if lin.mean else 'sums'}"] + [w for _, a in parts for w in a.warnings])


def _combined(parts: list[tuple[float, Attribution]]) -> tuple[list[AttributionItem], list[dict]]:
    """The items of ``sum(k x part)`` (each node's contributions combined alike, their interval's
    half-widths as if independent, changed if any part's is, the smallest p), largest first, and
    the parts' code changes, each once."""
    items: dict[str, AttributionItem] = {}
    spread: dict[str, float] = {}
    for k, part in parts:
        for i in part.attributions:
            prev = items.get(i.node)
            value = (prev.contribution if prev else 0.0) + k * i.contribution
            spread[i.node] = math.hypot(spread.get(i.node, 0.0), k * (i.ci_high - i.ci_low) / 2)
            ps = [x.p_value for x in (prev, i) if x is not None and x.p_value is not None]
            items[i.node] = dataclasses.replace(
                prev or i, contribution=value, ci_low=value - spread[i.node], ci_high=value + spread[i.node],
                mechanism_changed=any(x.mechanism_changed for x in (prev, i) if x is not None),
                p_value=min(ps) if ps else None)
    ranked = sorted(items.values(), key=lambda i: (-abs(i.contribution), i.p_value if i.p_value is not None else 1.0,
                                                   i.node))
    codes = [cc for _, part in parts for cc in part.code_changes]
    return ranked, [cc for n, cc in enumerate(codes) if cc not in codes[:n]]
