"""The HTML report of an attribution: one self-contained file, readable offline and in notebooks.

    >>> res = spark_causal.attribute("./store", "2026-11-23", "2026-11-24", "revenue.revenue")  # doctest: +SKIP
    >>> report.write_html(res, "report.html", store="./store")                               # doctest: +SKIP

The file holds, in order: the summary sentence and the key figures, the attribution chart (a
waterfall from the baseline to the current value, with intervals), the DAG of the target's
ancestors in the current run with the attributed nodes highlighted (their contribution and share of
the change) and code changes marked, the attribution table, the code changes, and the baseline vs
current statistics of the nodes involved. Pictures are inlined as base64 PNG and the style sheet is
inline, so the file loads nothing from anywhere (no script, no font, no network).

Without a store only what the result itself holds is shown (summary, chart, table, code changes):
the graph and the statistics live in the store. Reading the store is best effort: a part that cannot
be read becomes a note in the report, never an error, because a report about a failed comparison is
still worth opening.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import uuid
from typing import TYPE_CHECKING, Any

from .errors import SparkCausalError
from .result import Attribution, _fmt

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd
    from matplotlib.figure import Figure

    from .store import Store

__all__ = ["render_html", "write_html", "render_fragment", "figure_html"]

_MAX_IMAGE_PX = 2200
"""Widest inlined picture, in pixels, unless a caller asks otherwise."""
_MAX_GRAPH_PX = 3300
"""Widest inlined graph: at the drawing's own 110 dpi up to 30 inches (about 10 layers)."""
_MAX_STATS_NODES = 30
_STATS_COLUMNS = ("count", "nulls", "mean", "std", "min", "max")

_CSS = """
.sc-report { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #222;
  max-width: 1150px; margin: 0 auto; padding: 12px 18px; line-height: 1.4; font-size: 14px; }
.sc-report h1 { font-size: 22px; margin: 8px 0 2px 0; }
.sc-report h2 { font-size: 17px; margin: 26px 0 8px 0; border-bottom: 1px solid #ddd; padding-bottom: 3px; }
.sc-report .runs { color: #666; margin: 0 0 10px 0; }
.sc-report .summary { font-size: 17px; font-weight: 600; background: #f4f8fb; border-left: 5px solid #2e86c1;
  padding: 10px 14px; margin: 10px 0; }
.sc-report .summary.quiet { border-left-color: #7f8c8d; }
.sc-report .figures { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.sc-report .figure { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 130px; }
.sc-report .figure .k { color: #666; font-size: 12px; }
.sc-report .figure .v { font-size: 18px; font-weight: 600; }
.sc-report .warn { background: #fff6e5; border: 1px solid #f0c36d; border-radius: 6px; padding: 6px 14px; }
.sc-report .note { color: #666; font-style: italic; }
.sc-report table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
.sc-report th, .sc-report td { border-bottom: 1px solid #e5e5e5; padding: 4px 8px; text-align: left;
  vertical-align: top; }
.sc-report th { background: #f6f6f6; font-weight: 600; }
.sc-report td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.sc-report td.moved { background: #fdecea; }
.sc-report .bar { display: inline-block; height: 10px; border-radius: 2px; vertical-align: middle; }
.sc-report .pos { background: #2e86c1; } .sc-report .neg { background: #c0392b; }
.sc-report code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; font-size: 12px; }
.sc-report del code { background: #fdecea; } .sc-report ins code { background: #e8f6ec; }
.sc-report ins, .sc-report del { text-decoration: none; }
.sc-report .pic { overflow: auto; max-height: 1100px; border: 1px solid #eee; }
.sc-report .pic img { display: block; max-width: 100%; height: auto; }
.sc-report .zoom { display: none; }
.sc-report .zoom + label { cursor: pointer; color: #2e86c1; font-size: 12px; }
.sc-report .zoom + label::before { content: "show the graph at full size (scrolls)"; }
.sc-report .zoom:checked + label::before { content: "fit the graph to the page"; }
.sc-report .zoom:checked + label + .pic img { max-width: none; }
.sc-report .chart img { max-width: 100%; height: auto; }
.sc-report details summary { cursor: pointer; color: #2e86c1; margin: 4px 0; }
.sc-report footer { color: #888; font-size: 12px; margin-top: 28px; border-top: 1px solid #eee; padding-top: 6px; }
"""


# ---------------------------------------------------------------- public


def render_html(result: Attribution, *, store: str | Store | None = None) -> str:
    """The whole report as one self-contained HTML document (a string).

    ``store`` (a path or a :class:`~spark_causal.store.Store`) adds the run's DAG and the statistics
    of the nodes involved; without it the report shows what the result holds.
    """
    title = f"spark-causal: {result.metric_name}, {result.baseline_run} \u2192 {result.current_run}"
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{_body(result, store)}\n</body>\n</html>\n")


def write_html(result: Attribution, path: str, *, store: str | Store | None = None) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    text = render_html(result, store=store)
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise SparkCausalError(f"cannot write the report {path}: {e.strerror}",
                               hint="check that the folder exists and is writable") from None


def render_fragment(result: Attribution, *, store: str | Store | None = None) -> str:
    """The report as an HTML fragment (a ``<div>`` with its own scoped style), for notebooks:
    ``displayHTML(render_fragment(res, store=...))`` on Databricks, or ``Attribution._repr_html_``."""
    return f"<style>{_CSS}</style>\n{_body(result, store)}"


def figure_html(fig: Figure, *, alt: str, max_px: int = _MAX_IMAGE_PX, css_class: str = "chart") -> str:
    """A matplotlib figure as an inline ``<img>`` (base64 PNG), at most ``max_px`` pixels wide."""
    width_in = float(fig.get_figwidth())
    dpi = max(40.0, min(float(fig.dpi), max_px / max(width_in, 1e-6)))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    png = buf.getvalue()
    data = base64.b64encode(png).decode("ascii")
    w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # from the IHDR chunk
    return (f"<div class=\"{_e(css_class)}\"><img alt=\"{_e(alt)}\" width=\"{w}\" height=\"{h}\" "
            f"src=\"data:image/png;base64,{data}\"></div>")


# ---------------------------------------------------------------- the sections


def _body(result: Attribution, store: str | Store | None) -> str:
    parts = [_header(result)]
    if result.warnings:
        parts.append("<div class=\"warn\"><b>Warnings</b><ul>"
                     + "".join(f"<li>{_e(w)}</li>" for w in result.warnings) + "</ul></div>")
    parts.append("<h2>Attribution</h2>")
    parts.append(_chart(result))
    s = _open_store(store)
    graph, graph_note = (None, None)
    if s is not None:
        graph, graph_note = _read_graph(s, result.current_run)
        parts.append("<h2>Where in the job</h2>")
        parts.append(_graph_section(result, graph, graph_note))
    parts.append("<h2>Mechanisms</h2>")
    parts.append(_table(result))
    parts.append("<h2>Code changes</h2>")
    parts.append(_code_changes(result))
    if s is not None:
        parts.append("<h2>Statistics of the nodes involved</h2>")
        parts.append(_stats_section(result, s, graph))
    parts.append(_footer(result))
    return "<div class=\"sc-report\">\n" + "\n".join(parts) + "\n</div>"


def _header(r: Attribution) -> str:
    pct = f" ({r.change / r.baseline_value:+.1%})" if r.baseline_value else ""
    figures = [("baseline", _fmt(r.baseline_value)), ("current", _fmt(r.current_value)),
               ("change", _fmt(r.change, signed=True) + pct), ("unexplained", _fmt(r.unexplained, signed=True)),
               ("verdict", "significant change" if r.significant else "no significant change")]
    cells = "".join(f"<div class=\"figure\"><div class=\"k\">{_e(k)}</div><div class=\"v\">{_e(v)}</div></div>"
                    for k, v in figures)
    quiet = "" if r.significant else " quiet"
    return (f"<h1>Why did {_e(r.metric_name)} move?</h1>"
            f"<p class=\"runs\">target <code>{_e(r.target)}</code> ({_e(r.agg)}), baseline run "
            f"<b>{_e(r.baseline_run)}</b> \u2192 current run <b>{_e(r.current_run)}</b></p>"
            f"<p class=\"summary{quiet}\">{_e(r.summary())}</p><div class=\"figures\">{cells}</div>")


def _chart(r: Attribution) -> str:
    try:
        fig = r.plot(kind="waterfall")
    except Exception as e:  # noqa: BLE001 - a chart that cannot be drawn must not lose the report
        return f"<p class=\"note\">the chart could not be drawn: {_e(str(e))}</p>"
    return (figure_html(fig, alt=f"attribution chart of {r.metric_name}", max_px=1200)
            + "<p class=\"note\">From the baseline value (left) through each mechanism's contribution, "
              "with its bootstrap interval, to the current value (right).</p>")


def _graph_section(r: Attribution, graph: nx.DiGraph | None, note: str | None) -> str:
    if graph is None:
        return f"<p class=\"note\">{_e(note or 'no graph')}</p>"
    from . import render

    H = render.subgraph_for_target(graph, r.target)
    scores, labels, code = render.attribution_marks(r)
    try:
        fig = render.draw(H, highlight=scores, labels=labels, code_changes=code,
                          title=f"{r.target} and its ancestors in run {r.current_run}")
    except Exception as e:  # noqa: BLE001
        return f"<p class=\"note\">the graph could not be drawn: {_e(str(e))}</p>"
    shown = [n for n in scores if n in H]
    caption = (f"{H.number_of_nodes()} nodes, {H.number_of_edges()} edges. Red frames: attributed "
               f"mechanisms with their contribution and share of the change"
               + (f" ({', '.join(shown)})" if shown else " (none in this graph)")
               + ("; purple dashed frames: code changed between the runs" if code else "") + ".")
    zoom = f"sc-zoom-{uuid.uuid4().hex[:10]}"  # a CSS-only toggle between fit-to-page and full size
    return (f"<input type=\"checkbox\" class=\"zoom\" id=\"{zoom}\"><label for=\"{zoom}\"></label>"
            + figure_html(fig, alt=f"causal graph of {r.target}", css_class="pic", max_px=_MAX_GRAPH_PX)
            + f"<p class=\"note\">{_e(caption)}</p>")


def _table(r: Attribution) -> str:
    tests = (r.details or {}).get("tests") or {}
    main = [a for a in r.attributions if a.contribution != 0 or a.mechanism_changed]
    rest = [a for a in r.attributions if not (a.contribution != 0 or a.mechanism_changed)]
    top = max((abs(a.contribution) for a in main), default=0.0) or 1.0

    def rows(items: list) -> str:
        out = []
        for i, a in enumerate(items, start=1):
            share = f"{a.contribution / r.change:.0%}" if r.change else ""
            width = int(round(80 * abs(a.contribution) / top))
            bar = f"<span class=\"bar {'pos' if a.contribution >= 0 else 'neg'}\" style=\"width:{width}px\"></span>"
            t = tests.get(a.node) or {}
            how = ", ".join(str(x) for x in (t.get("how"), t.get("note")) if x)
            if a.kind == "volume":
                how = "driving rows"
            p = "" if a.p_value is None else f"{a.p_value:.3g}"
            out.append(
                f"<tr><td class=\"num\">{i}</td><td><code>{_e(a.node)}</code></td><td>{_e(a.kind)}</td>"
                f"<td class=\"num\">{_e(_fmt(a.contribution, signed=True))}</td><td class=\"num\">{_e(share)}</td>"
                f"<td>{bar}</td><td class=\"num\">[{_e(_fmt(a.ci_low, signed=True))}, "
                f"{_e(_fmt(a.ci_high, signed=True))}]</td><td>{'yes' if a.mechanism_changed else 'no'}</td>"
                f"<td class=\"num\">{_e(p)}</td><td>{_e(how)}</td></tr>")
        return "".join(out)

    head = ("<tr><th>#</th><th>mechanism</th><th>kind</th><th>contribution</th><th>share</th><th></th>"
            "<th>interval</th><th>changed</th><th>p-value</th><th>tested as</th></tr>")
    text = (f"<table><thead>{head}</thead><tbody>{rows(main)}</tbody></table>" if main else
            "<p class=\"note\">No mechanism changed or contributed.</p>")
    if rest:
        text += (f"<details><summary>{len(rest)} mechanism{'s' if len(rest) != 1 else ''} tested and "
                 f"unchanged</summary><table><thead>{head}</thead><tbody>{rows(rest)}</tbody></table></details>")
    return text + ("<p class=\"note\">Contributions are in the metric's own units and add up, with the "
                   f"unexplained part ({_e(_fmt(r.unexplained, signed=True))}), to the change "
                   f"({_e(_fmt(r.change, signed=True))}). Intervals are bootstrap intervals; p-values are those "
                   "of the mechanism-change tests, adjusted for multiplicity.</p>")


def _code_changes(r: Attribution) -> str:
    if not r.code_changes:
        return "<p class=\"note\">No node's code changed between the two runs.</p>"
    rows = "".join(
        f"<tr><td><code>{_e(str(c.get('node')))}</code></td><td><del><code>{_e(str(c.get('baseline')))}</code>"
        f"</del></td><td><ins><code>{_e(str(c.get('current')))}</code></ins></td></tr>" for c in r.code_changes)
    return ("<table><thead><tr><th>node</th><th>baseline run</th><th>current run</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _stats_section(r: Attribution, store: Store, graph: nx.DiGraph | None) -> str:
    nodes = _involved(r, graph)
    frames, notes = {}, []
    for tag, run in (("baseline", r.baseline_run), ("current", r.current_run)):
        try:
            frames[tag] = store.read_parquet(run, "stats.parquet")
        except (SparkCausalError, OSError, ValueError) as e:
            notes.append(f"no statistics for run {run}: {e}")
    if len(frames) < 2:
        return "<p class=\"note\">" + _e("; ".join(notes) or "no statistics") + "</p>"
    b = {str(x["node"]): x for x in frames["baseline"].to_dict("records")}
    c = {str(x["node"]): x for x in frames["current"].to_dict("records")}
    rows = []
    for node in nodes:
        if node.endswith(".__rows__"):
            table = node[: -len(".__rows__")]
            rb, rc = _table_rows(frames["baseline"], table), _table_rows(frames["current"], table)
            if rb is None and rc is None:
                continue
            rows.append(f"<tr><td><code>{_e(node)}</code></td><td>rows of {_e(table)}</td>"
                        + _pair(rb, rc) + "<td></td>" * (len(_STATS_COLUMNS) - 1) + "<td></td></tr>")
            continue
        sb, sc = b.get(node), c.get(node)
        if sb is None and sc is None:
            continue
        kind = (sc or sb or {}).get("kind") or ""
        cells = "".join(_pair(_get(sb, k), _get(sc, k)) for k in _STATS_COLUMNS)
        top = _pair_text(_top((sb or {}).get("top")), _top((sc or {}).get("top")))
        rows.append(f"<tr><td><code>{_e(node)}</code></td><td>{_e(str(kind))}</td>{cells}<td>{top}</td></tr>")
    if not rows:
        return "<p class=\"note\">The stored statistics hold none of the nodes involved.</p>"
    head = "".join(f"<th>{k}</th>" for k in _STATS_COLUMNS)
    return ("<table><thead><tr><th>node</th><th>kind</th>" + head + "<th>top values</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table><p class=\"note\">Each cell: baseline \u2192 current; shaded "
            "where the value moved by more than 5%. Exact per-stage statistics recorded while the job ran.</p>"
            + ("<p class=\"note\">" + _e("; ".join(notes)) + "</p>" if notes else ""))


def _footer(r: Attribution) -> str:
    from . import __version__

    d = r.details or {}
    units = d.get("units") or {}
    bits = [f"spark-causal {__version__}", f"seed {r.seed}"]
    if d.get("segment"):
        bits.append(f"segment {d['segment']} (driving table {d.get('driving')})")
    if units:
        bits.append(f"sampled units: baseline {units.get('baseline')}, current {units.get('current')}")
    if d.get("n_bootstrap") is not None:
        bits.append(f"{d['n_bootstrap']} bootstrap replicates")
    return "<footer>" + _e(" \u00b7 ".join(bits)) + "</footer>"


# ---------------------------------------------------------------- helpers


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _open_store(store: Any) -> Store | None:
    if store is None:
        return None
    from .store import Store

    return store if isinstance(store, Store) else Store(str(store))


def _read_graph(store: Store, run: str) -> tuple[nx.DiGraph | None, str | None]:
    try:
        return store.graph(run), None
    except (SparkCausalError, OSError, ValueError) as e:
        return None, f"the graph of run {run} could not be read: {e}"


def _involved(r: Attribution, graph: nx.DiGraph | None) -> list[str]:
    """The attributed nodes, the code changes, the target, and the nodes on the paths between them."""
    first = [a.node for a in r.attributions if a.contribution != 0 or a.mechanism_changed]
    first += [str(c.get("node")) for c in r.code_changes if c.get("node")]
    nodes = list(dict.fromkeys(first))
    if graph is not None and r.target in graph:
        import networkx as nx

        anc = nx.ancestors(graph, r.target)
        between = set()
        for n in nodes:
            if n in graph:
                between |= nx.descendants(graph, n) & anc
        order = {n: i for i, n in enumerate(nx.topological_sort(graph))}
        nodes += sorted(between - set(nodes), key=lambda n: order.get(n, 0))
    if r.target not in nodes:
        nodes.append(r.target)
    return nodes[:_MAX_STATS_NODES]


def _get(row: dict | None, key: str) -> Any:
    if row is None:
        return None
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def _table_rows(stats: pd.DataFrame, table: str) -> Any:
    """Rows of a source table: the count of any of its columns in the stats."""
    if "node" not in stats.columns or "count" not in stats.columns:
        return None
    m = stats[stats["node"].astype(str).str.startswith(table + ".") & (stats.get("kind") == "source")]
    return None if m.empty else int(m["count"].max())


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _show(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "" if v is None else str(v)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    return _fmt(x)


def _pair(b: Any, c: Any) -> str:
    xb, xc = _num(b), _num(c)
    moved = False
    if xb is not None and xc is not None:
        moved = abs(xc - xb) > 0.05 * max(abs(xb), abs(xc), 1e-12)
    elif (b is None) != (c is None) or (b is not None and str(b) != str(c)):
        moved = True
    cls = "num moved" if moved else "num"
    if b is None and c is None:
        return f"<td class=\"{cls}\"></td>"
    return f"<td class=\"{cls}\">{_e(_show(b))} \u2192 {_e(_show(c))}</td>"


def _pair_text(b: str, c: str) -> str:
    if not b and not c:
        return ""
    return _e(b) if b == c else f"{_e(b)} \u2192 {_e(c)}"


def _top(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    try:
        return ", ".join(f"{k} {int(n):,}" for k, n in list(v)[:4])
    except (TypeError, ValueError):
        return str(v)
