"""The result of an attribution: a small frozen dataclass with renderings.

``Attribution.to_dict()`` is the JSON contract of issue 4::

    {"target", "agg", "baseline": {"run", "value"}, "current": {"run", "value"}, "change",
     "significant", "attributions": [{"node", "kind", "table", "stage", "column", "contribution",
     "ci_low", "ci_high", "mechanism_changed", "p_value"}], "code_changes": [...], "warnings": [...]}

plus a few extra keys (``where``, ``unexplained``, ``seed``, ``details``).
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("source", "stage", "selection", "volume")


@dataclass(frozen=True)
class AttributionItem:
    """The share of the change that one mechanism (a node, or the volume of rows) caused.

    ``contribution`` is in the metric's own units; ``ci_low``/``ci_high`` is its bootstrap interval;
    ``mechanism_changed`` says whether the node's mechanism (its distribution, lookup or code) changed
    significantly between the runs and ``p_value`` is that test's p-value (multiplicity-adjusted;
    ``0.0`` for a change known from the code fingerprints).
    """

    node: str
    kind: str
    table: str | None
    stage: str | None
    column: str | None
    contribution: float
    ci_low: float
    ci_high: float
    mechanism_changed: bool
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Attribution:
    """Why the target metric moved between a baseline run and a current run."""

    target: str
    agg: str
    where: str | None
    baseline_run: str
    current_run: str
    baseline_value: float
    current_value: float
    change: float
    significant: bool
    attributions: list[AttributionItem]
    code_changes: list[dict[str, Any]]
    warnings: list[str]
    seed: int
    unexplained: float
    details: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ data
    def to_dict(self) -> dict[str, Any]:
        """The JSON contract of issue 4 (with a few extra keys)."""
        return {
            "target": self.target,
            "agg": self.agg,
            "where": self.where,
            "baseline": {"run": self.baseline_run, "value": _clean(self.baseline_value)},
            "current": {"run": self.current_run, "value": _clean(self.current_value)},
            "change": _clean(self.change),
            "significant": bool(self.significant),
            "attributions": [a.to_dict() for a in self.attributions],
            "code_changes": [{k: _clean(v) for k, v in c.items()} for c in self.code_changes],
            "warnings": list(self.warnings),
            "unexplained": _clean(self.unexplained),
            "seed": self.seed,
            "details": _clean(self.details),
        }

    def to_json(self, path: str | None = None, *, indent: int | None = 2) -> str:
        """The contract as a JSON string; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    def to_pandas(self):
        """One row per attribution, ranked as in ``attributions``."""
        import pandas as pd

        cols = ["node", "kind", "table", "stage", "column", "contribution", "ci_low", "ci_high",
                "mechanism_changed", "p_value"]
        return pd.DataFrame([asdict(a) for a in self.attributions], columns=cols)

    # ------------------------------------------------------------- rendering
    @property
    def metric_name(self) -> str:
        """The metric as people say it, e.g. ``revenue`` or ``mean(revenue) where country = 'DE'``."""
        return _metric_name(self.target, self.agg, self.where)

    def summary(self) -> str:
        """One sentence, e.g. ``revenue fell 9,300 (...); 8,120 of it from fx.rate, ...``."""
        verb = "rose" if self.change > 0 else "fell" if self.change < 0 else "did not move"
        head = f"{self.metric_name} {verb}"
        if self.change != 0:
            head += f" {_fmt(abs(self.change))}"
        head += f" (from {_fmt(self.baseline_value)} to {_fmt(self.current_value)})"
        if not self.significant:
            # code that changed is certain, but its effect can be within the metric's noise: say both
            items = {a.node: a for a in self.attributions}
            changed = [f"{n} ({_fmt(items[n].contribution, signed=True)})" if n in items and items[n].contribution
                       else n for n in dict.fromkeys(cc.get("node") for cc in self.code_changes
                                                     if cc.get("node") and cc.get("upstream", True))]
            if changed:
                return (head + f": no significant change, though the code of {', '.join(changed[:3])} changed "
                        "(its effect is within the metric's noise).")
            return head + ": no significant change."
        parts = []
        tiny = 1e-9 * max(abs(self.baseline_value), abs(self.current_value), abs(self.change))  # float noise
        for a in self.attributions:
            if abs(a.contribution) <= tiny or len(parts) >= 3:
                continue
            same_sign = (a.contribution > 0) == (self.change > 0)
            amount = _fmt(abs(a.contribution)) if same_sign else f"{_fmt(a.contribution, signed=True)}"
            label = f"{a.node} (volume)" if a.kind == "volume" else a.node
            parts.append(f"{amount} from {label}")
        if not parts:
            return head + "; no mechanism explains it."
        first, rest = parts[0], parts[1:]
        if not first.startswith(("+", "-")):  # a part of the same sign as the change
            first = first.replace(" from ", " of it from ", 1)
        text = f"{head}; {first}"
        if rest:
            text += ", " + ", ".join(rest)
        if self.change and abs(self.unexplained) > 0.1 * abs(self.change):
            text += f"; {_fmt(self.unexplained, signed=True)} unexplained"
        return text + "."

    def plot(self, path: str | None = None, *, top: int = 12, kind: str = "bar"):
        """The attribution as a chart with intervals; returns the matplotlib figure.

        ``kind="bar"``: one horizontal bar per contribution. ``kind="waterfall"``: from the
        baseline value, step by step through the contributions (and what they leave unexplained),
        to the current value. Written to ``path`` too when given (SVG if it ends in ``.svg``).
        """
        if kind == "waterfall":
            fig = self._waterfall(top)
            if path is not None:
                fig.savefig(path, dpi=120, format="svg" if str(path).lower().endswith(".svg") else "png")
            return fig
        if kind != "bar":
            raise ValueError(f"unknown chart kind {kind!r}: use 'bar' or 'waterfall'")
        from matplotlib.figure import Figure

        items = [a for a in self.attributions if a.contribution != 0 or a.mechanism_changed][:top]
        labels = [f"{a.node} ({a.kind})" for a in items]
        values = [a.contribution for a in items]
        lows = [max(0.0, a.contribution - a.ci_low) for a in items]
        highs = [max(0.0, a.ci_high - a.contribution) for a in items]
        colors = ["#c0392b" if v < 0 else "#2e86c1" for v in values]
        if self.unexplained and self.change and abs(self.unexplained) > 1e-3 * abs(self.change):
            labels.append("unexplained")
            values.append(self.unexplained)
            lows.append(0.0)
            highs.append(0.0)
            colors.append("#999999")
        fig = Figure(figsize=(8, 1.2 + 0.45 * max(1, len(values))))
        ax = fig.add_subplot(1, 1, 1)
        ypos = list(range(len(values)))[::-1]
        if values:
            ax.barh(ypos, values, xerr=[lows, highs], color=colors, capsize=3)
            ax.set_yticks(ypos)
            ax.set_yticklabels(labels)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"contribution to the change of {self.metric_name}")
        title = self.summary()
        if len(title) > 110:
            title = title[:107] + "..."
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120, format="svg" if str(path).lower().endswith(".svg") else "png")
        return fig

    def _waterfall(self, top: int):
        from matplotlib.figure import Figure

        items = [a for a in self.attributions if a.contribution != 0][:top]
        rest = sum(a.contribution for a in self.attributions if a.contribution != 0) - sum(
            a.contribution for a in items)
        steps: list[tuple[str, float, float, float]] = []  # label, value, ci_low, ci_high
        for a in items:
            label = f"{a.node}\n(volume)" if a.kind == "volume" else a.node
            steps.append((label, a.contribution, a.ci_low, a.ci_high))
        if rest:
            steps.append(("other", rest, rest, rest))
        if self.change and abs(self.unexplained) > 1e-3 * abs(self.change):
            steps.append(("unexplained", self.unexplained, self.unexplained, self.unexplained))
        n = len(steps) + 2
        fig = Figure(figsize=(max(8.0, 1.2 * n + 2.0), 4.8))
        ax = fig.add_subplot(1, 1, 1)
        ends = [self.baseline_value, self.current_value]
        running = self.baseline_value
        ax.bar(0, self.baseline_value, color="#7f8c8d", width=0.6)
        for i, (label, value, lo, hi) in enumerate(steps, start=1):
            colour = "#999999" if label in ("unexplained", "other") else (
                "#2e86c1" if value >= 0 else "#c0392b")
            ax.bar(i, value, bottom=running, color=colour, width=0.6)
            top_y = running + value
            if hi > lo:
                ax.errorbar(i, top_y, yerr=[[max(0.0, value - lo)], [max(0.0, hi - value)]], color="black",
                            capsize=4, linewidth=1)
            ax.plot([i - 0.7, i + 0.3], [running, running], color="#555555", linewidth=0.6, linestyle=":")
            ax.annotate(_fmt(value, signed=True), (i, max(running, top_y)), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
            running = top_y
            ends += [running, running - value, running - value + lo, running - value + hi]
        ax.plot([n - 1.7, n - 1.3], [running, running], color="#555555", linewidth=0.6, linestyle=":")
        ax.bar(n - 1, self.current_value, color="#34495e", width=0.6)
        for i, v in ((0, self.baseline_value), (n - 1, self.current_value)):
            ax.annotate(_fmt(v), (i, v), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8,
                        fontweight="bold")
        finite = [v for v in ends if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        span = (high - low) or abs(high) or 1.0
        if low > 0 and low - 0.15 * span > 0 and span < 0.35 * high:
            # a small change of a large value: zoom in, and say that the axis does not start at 0
            ax.set_ylim(low - 0.15 * span, high + 0.15 * span)
            ax.set_ylabel(f"{self.metric_name} (axis does not start at 0)")
        else:
            ax.set_ylim(min(0.0, low - 0.05 * span), max(0.0, high + 0.12 * span))
            ax.set_ylabel(self.metric_name)
        labels = ([_run_label("baseline", self.baseline_run)] + [s[0] for s in steps]
                  + [_run_label("current", self.current_run)])
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=20 if n > 4 else 0, ha="right" if n > 4 else "center", fontsize=8)
        ax.axhline(0, color="black", linewidth=0.6)
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt(v)))
        ax.set_title(f"{self.metric_name}: {self.baseline_run} \u2192 {self.current_run}", fontsize=10)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        """The HTML report's chart and table (no graph or statistics: those need the store)."""
        try:
            from .report import render_fragment

            return render_fragment(self)
        except Exception:  # noqa: BLE001 - a notebook must always show something
            return self._plain_html()

    def _plain_html(self) -> str:
        e = html.escape
        rows = []
        for a in self.attributions:
            p = "" if a.p_value is None else f"{a.p_value:.3g}"
            rows.append(
                f"<tr><td>{e(a.node)}</td><td>{e(a.kind)}</td><td style='text-align:right'>"
                f"{e(_fmt(a.contribution, signed=True))}</td><td>[{e(_fmt(a.ci_low, signed=True))}, "
                f"{e(_fmt(a.ci_high, signed=True))}]</td><td>{'yes' if a.mechanism_changed else ''}"
                f"</td><td>{p}</td></tr>")
        warn = "".join(f"<li>{e(w)}</li>" for w in self.warnings)
        code = "".join(f"<li>{e(str(c.get('node')))}: {e(str(c.get('baseline')))} &rarr; "
                       f"{e(str(c.get('current')))}</li>" for c in self.code_changes)
        return (
            f"<div class='spark-causal-attribution'><p><b>{e(self.summary())}</b></p>"
            f"<p>{e(self.baseline_run)} &rarr; {e(self.current_run)}, change "
            f"{e(_fmt(self.change, signed=True))}, unexplained {e(_fmt(self.unexplained, signed=True))}"
            f"</p><table><thead><tr><th>node</th><th>kind</th><th>contribution</th><th>interval</th>"
            f"<th>changed</th><th>p</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f"<p>code changes:</p><ul>{code}</ul>" if code else "")
            + (f"<p>warnings:</p><ul>{warn}</ul>" if warn else "") + "</div>")

    def __str__(self) -> str:
        return self.summary()


def _run_label(role: str, run: str) -> str:
    return role if run == role else f"{role}\n{run}"


def _metric_name(target: str, agg: str, where: str | None) -> str:
    """A metric's short name: the output column, its aggregate unless ``sum``, its row filter if any.

    Shared by attribution and what-if results so that both name the same metric the same way.
    """
    name = target.rsplit(".", 1)[-1]
    if agg != "sum":
        name = f"{agg}({name})"
    if where:
        name = f"{name} where {where}"
    return name


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    sign = "+" if signed and x > 0 else ""
    if abs(x) >= 100:
        return f"{sign}{x:,.0f}"
    if x == 0:
        return "0"
    return f"{sign}{x:.3g}"


def _clean(v: Any) -> Any:
    """Make a value JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
