"""Graph export: node-link JSON, Graphviz DOT text, and a PNG/SVG drawn by matplotlib.

The picture is drawn without the Graphviz binary because it must work where only Python is
available (Databricks clusters, CI). The layout is the one a reader of a dataflow expects: sources
on the left grouped by table, each node one column to the right of its furthest input, outputs on the
right, and a few barycenter sweeps to untangle edges.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import networkx as nx

from spark_causal.errors import SparkCausalError, UnknownOutputError
from spark_causal.store import dump_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KIND_COLOURS = {
    "source": "#9ecae1",
    "stage": "#c7e9c0",
    "selection": "#fdd0a2",
    "aggregate": "#dadaeb",
}
"""Fill colour per node kind, shared by DOT and PNG so both pictures read the same."""
_OTHER_COLOUR = "#eeeeee"
EDGE_COLOURS = {
    "direct": "#444444",
    "filter": "#e6550d",
    "join": "#3182bd",
    "group": "#756bb1",
    "window": "#31a354",
    "udf": "#d62728",
}
_DOT_SHAPES = {"selection": "hexagon", "aggregate": "box3d"}
CODE_CHANGE_COLOUR = "#7b3294"
"""Frame colour of nodes whose code (fingerprint) differs between the two runs compared."""

# PNG geometry, in inches (the axes are laid out so that one data unit is one inch).
_LAYER_DX = 3.1
_BOX_W = 2.5
_BOX_H = 0.4
_ROW_DY = 0.52
_MARGIN = 0.5
_TABLE_GAP = 0.35  # extra room between two source tables, for their frames and names
_TOP = 0.9  # room for the title and legend
_FONT = 7.5
_CHARS = 34  # characters that fit in a box line at _FONT
_SWEEPS = 4


# ---------------------------------------------------------------- selection


def subgraph_for_output(G: nx.DiGraph, output: str) -> nx.DiGraph:
    """The columns of ``output`` and every node they depend on, with graph attributes trimmed to match.

    Outputs, sources and segments of the result are those whose nodes it contains, so an upstream
    output that this one reads stays visible.
    """
    outputs: dict[str, dict[str, Any]] = G.graph.get("outputs", {})
    if output not in outputs:
        raise UnknownOutputError(
            f"no output {output!r} in this run",
            hint=f"outputs: {', '.join(sorted(outputs))}" if outputs else "this run captured no outputs",
        )
    columns = [c for c in outputs[output]["columns"] if c in G]
    keep = set(columns).union(*(nx.ancestors(G, c) for c in columns))
    H = G.subgraph(keep).copy()
    kept_outputs = {name: o for name, o in outputs.items()
                    if name == output or (o["columns"] and set(o["columns"]) <= keep)}
    tables = {H.nodes[n].get("table") for n in H if H.nodes[n].get("kind") == "source"}
    H.graph = {
        **G.graph,
        "outputs": kept_outputs,
        "sources": {t: s for t, s in G.graph.get("sources", {}).items() if t in tables},
        "segments": [s for s in G.graph.get("segments", []) if s.get("output") in kept_outputs],
    }
    return H


# ---------------------------------------------------------------- JSON and DOT


def to_json(G: nx.DiGraph) -> str:
    """Node-link JSON (``edges="edges"``), strict: NaN and numpy values become plain JSON."""
    return dump_json(nx.node_link_data(G, edges="edges"))


def _dot_id(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_node(node: str, attrs: dict[str, Any], label: str) -> str:
    kind = attrs.get("kind", "")
    fields = {
        "label": _dot_id(label),
        "fillcolor": _dot_id(KIND_COLOURS.get(kind, _OTHER_COLOUR)),
        "shape": _DOT_SHAPES.get(kind, "box"),
        "tooltip": _dot_id(attrs.get("expr") or node),
    }
    if attrs.get("output"):
        fields["penwidth"] = "2.5"
    return f"{_dot_id(node)} [{', '.join(f'{k}={v}' for k, v in fields.items())}];"


def to_dot(G: nx.DiGraph) -> str:
    """Graphviz DOT text: left to right, sources clustered by table, indirect edges dashed and labelled."""
    lines = [
        "digraph spark_causal {",
        "  rankdir=LR;",
        '  node [style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8];',
    ]
    by_table: dict[str, list[str]] = defaultdict(list)
    for node, attrs in G.nodes(data=True):
        if attrs.get("kind") == "source":
            by_table[str(attrs.get("table", ""))].append(node)
        else:
            lines.append("  " + _dot_node(node, attrs, _label(node, attrs)))
    for i, (table, nodes) in enumerate(sorted(by_table.items())):
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label={_dot_id(table)}; style="rounded,dashed"; color="#6baed6";')
        for node in sorted(nodes):
            lines.append("    " + _dot_node(node, G.nodes[node], str(G.nodes[node].get("column", node))))
        lines.append("  }")
    for u, v, attrs in G.edges(data=True):
        kind = attrs.get("kind", "direct")
        style = {"color": _dot_id(EDGE_COLOURS.get(kind, "#888888"))}
        if kind != "direct":
            style.update(style="dashed", label=_dot_id(kind))
        lines.append(f"  {_dot_id(u)} -> {_dot_id(v)} [{', '.join(f'{k}={s}' for k, s in style.items())}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label(node: str, attrs: dict[str, Any]) -> str:
    """Two lines, owner then column: ids are long and the owner is what tells stages apart."""
    column = str(attrs.get("column", node))
    owner = attrs.get("output") or attrs.get("stage") or attrs.get("table")
    if owner is None and node.endswith("." + column):
        owner = node[: -len(column) - 1]
    return f"{owner}\n{column}" if owner else column


# ---------------------------------------------------------------- layout


def _layers(G: nx.DiGraph) -> dict[str, int]:
    """Layer = longest path from a root; outputs nothing reads are pushed to the last layer."""
    layer: dict[str, int] = {}
    try:
        order = list(nx.topological_sort(G))
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(u for u, _ in nx.find_cycle(G))
        raise SparkCausalError(f"the graph has a cycle ({cycle}), so it has no layers to draw",
                               hint="draw it with --format json or dot, and report the job's shape as a bug") from None
    for node in order:
        layer[node] = max((layer[p] + 1 for p in G.predecessors(node)), default=0)
    last = max(layer.values(), default=0)
    for node, attrs in G.nodes(data=True):
        if attrs.get("output") and G.out_degree(node) == 0:
            layer[node] = last
    return layer


def _order(G: nx.DiGraph, layer: dict[str, int]) -> list[list[str]]:
    """Order each layer by the mean position of its neighbours (barycenter sweeps).

    Sources keep their table together: a table moves as a block, by the mean of its columns.
    """
    def block(node: str) -> str:
        return _table_of(G, node) or node

    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in sorted(G, key=lambda n: (block(n), n)):
        rows[layer[node]].append(node)
    position = {n: i for row in rows for i, n in enumerate(row)}

    def mean_of(node: str, neighbours: list[str]) -> float:
        return sum(position[m] for m in neighbours) / len(neighbours) if neighbours else position[node]

    def sort_row(row: list[str], neighbours_of: Any) -> None:
        score = {n: mean_of(n, list(neighbours_of(n))) for n in row}
        members: dict[str, list[float]] = defaultdict(list)
        for n in row:
            members[block(n)].append(score[n])
        block_score = {b: sum(s) / len(s) for b, s in members.items()}
        row.sort(key=lambda n: (block_score[block(n)], block(n), score[n]))
        position.update({n: i for i, n in enumerate(row)})

    for _ in range(_SWEEPS):
        for row in rows[1:]:
            sort_row(row, G.predecessors)
        for row in reversed(rows[:-1]):
            sort_row(row, G.successors)
    return rows


def _offsets(G: nx.DiGraph, row: list[str]) -> list[float]:
    """Vertical offset of each node of a layer from its top, with a gap where a source table ends."""
    offsets = [0.0]
    for prev, node in pairwise(row):
        offsets.append(offsets[-1] + _ROW_DY + (_TABLE_GAP if _table_of(G, prev) != _table_of(G, node) else 0.0))
    return offsets[: len(row)]


def _table_of(G: nx.DiGraph, node: str) -> str | None:
    attrs = G.nodes[node]
    return str(attrs.get("table", "")) if attrs.get("kind") == "source" else None


def _shorten(text: str) -> str:
    return text if len(text) <= _CHARS else text[: _CHARS - 1] + "\u2026"


# ---------------------------------------------------------------- drawing


def draw(G: nx.DiGraph, *, highlight: dict[str, float] | None = None, title: str | None = None,
         labels: dict[str, str] | None = None, code_changes: Iterable[str] = ()) -> Figure:
    """Draw the graph as a matplotlib Figure (no pyplot, so a notebook's backend is left alone).

    ``highlight`` maps node ids to a score (e.g. an attribution): those nodes get a red border
    whose width grows with the score and the score written beside them (or ``labels[node]`` when
    given, e.g. ``"+8,120 (87%)"``). Unknown ids are ignored, so a result may include pseudo-nodes
    such as the volume term. Nodes in ``code_changes`` (their code differs between two runs) get a
    purple double frame and a "code changed" tag.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    rows = _order(G, _layers(G))
    offsets = [_offsets(G, row) for row in rows]
    extent = max((o[-1] for o in offsets if o), default=0.0)
    width = 2 * _MARGIN + max(len(rows) - 1, 0) * _LAYER_DX + _BOX_W
    height = 2 * _MARGIN + _TOP + extent + _BOX_H
    width, height = max(width, 8.0), max(height, 3.5)
    fig = Figure(figsize=(width, height), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()

    x0 = (width - (max(len(rows) - 1, 0) * _LAYER_DX + _BOX_W)) / 2 + _BOX_W / 2
    centre_y = (height - _TOP) / 2
    xy: dict[str, tuple[float, float]] = {}
    for i, (row, offset) in enumerate(zip(rows, offsets, strict=True)):
        for node, dy in zip(row, offset, strict=True):
            xy[node] = (x0 + i * _LAYER_DX, centre_y + offset[-1] / 2 - dy)

    _draw_tables(ax, G, xy, FancyBboxPatch)
    for u, v, attrs in G.edges(data=True):
        kind = attrs.get("kind", "direct")
        (x1, y1), (x2, y2) = xy[u], xy[v]
        ax.add_patch(FancyArrowPatch(
            (x1 + _BOX_W / 2, y1), (x2 - _BOX_W / 2, y2),
            arrowstyle="-|>", mutation_scale=9, linewidth=0.9, shrinkA=0, shrinkB=1,
            color=EDGE_COLOURS.get(kind, "#888888"), linestyle="-" if kind == "direct" else (0, (4, 2)),
            connectionstyle="arc3,rad=0.0" if x2 - x1 <= _LAYER_DX else "arc3,rad=-0.08",
            alpha=0.75, zorder=1,
        ))

    scores = {n: float(s) for n, s in (highlight or {}).items() if n in xy}
    changed_code = {n for n in code_changes if n in xy}
    top = max((abs(s) for s in scores.values()), default=0.0) or 1.0
    for node, (x, y) in xy.items():
        attrs = G.nodes[node]
        label = attrs.get("column", node) if attrs.get("kind") == "source" else _label(node, attrs)
        edge, lw = ("#222222", 2.2) if attrs.get("output") else ("#777777", 0.7)
        if node in scores:
            edge, lw = "#d62728", 1.5 + 3.0 * abs(scores[node]) / top
        ax.add_patch(FancyBboxPatch(
            (x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H, boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=KIND_COLOURS.get(attrs.get("kind", ""), _OTHER_COLOUR), edgecolor=edge,
            linewidth=lw, zorder=2,
        ))
        text = "\n".join(_shorten(line) for line in str(label).split("\n"))
        ax.text(x, y, text, ha="center", va="center", fontsize=_FONT, zorder=3, linespacing=1.1)
        if node in changed_code:
            ax.add_patch(FancyBboxPatch(
                (x - _BOX_W / 2 - 0.05, y - _BOX_H / 2 - 0.05), _BOX_W + 0.1, _BOX_H + 0.1,
                boxstyle="round,pad=0,rounding_size=0.1", facecolor="none", edgecolor=CODE_CHANGE_COLOUR,
                linewidth=1.6, linestyle=(0, (3, 1.5)), zorder=2,
            ))
            ax.text(x - _BOX_W / 2, y + _BOX_H / 2 + 0.07, "code changed", ha="left", va="bottom",
                    fontsize=_FONT - 0.5, color=CODE_CHANGE_COLOUR, fontweight="bold", zorder=3,
                    bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        if node in scores:
            tag = (labels or {}).get(node) or f"{scores[node]:+.3g}"
            ax.text(x + _BOX_W / 2, y + _BOX_H / 2 + 0.02, tag, ha="right", va="bottom",
                    fontsize=_FONT, color="#d62728", fontweight="bold", zorder=3,
                    bbox={"boxstyle": "round,pad=0.12", "facecolor": "white", "edgecolor": "none",
                          "alpha": 0.85})

    kinds = sorted({G.nodes[n].get("kind", "") for n in G})
    edge_kinds = sorted({k for *_, k in G.edges(data="kind", default="direct")})
    handles = [Patch(facecolor=KIND_COLOURS.get(k, _OTHER_COLOUR), edgecolor="#777777", label=k) for k in kinds]
    handles += [Line2D([], [], color=EDGE_COLOURS.get(k, "#888888"), linestyle="-" if k == "direct" else "--",
                       label=f"{k} edge") for k in edge_kinds]
    if scores:
        handles.append(Patch(facecolor="white", edgecolor="#d62728", linewidth=2, label="attributed"))
    if changed_code:
        handles.append(Patch(facecolor="white", edgecolor=CODE_CHANGE_COLOUR, linestyle="--", linewidth=1.5,
                             label="code changed"))
    if handles and title:  # the title takes the first line, the legend goes under it
        fig.legend(handles=handles, loc="upper left", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(_MARGIN / width, 1 - 0.42 / height))
    elif handles:
        fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, frameon=False,
                   bbox_to_anchor=(1 - _MARGIN / width, 1 - 0.1 / height))
    if title:
        ax.text(_MARGIN, height - 0.15, title, ha="left", va="top", fontsize=11, fontweight="bold")
    return fig


def _draw_tables(ax: Any, G: nx.DiGraph, xy: dict[str, tuple[float, float]], box: Any) -> None:
    """A light frame behind each source table's columns, the table name above it."""
    by_table: dict[str, list[float]] = defaultdict(list)
    for node, attrs in G.nodes(data=True):
        if attrs.get("kind") == "source":
            by_table[str(attrs.get("table", ""))].append(xy[node][1])
    x = min((xy[n][0] for n in xy), default=0.0)
    for table, ys in by_table.items():
        low, high = min(ys) - _BOX_H / 2 - 0.06, max(ys) + _BOX_H / 2 + 0.06
        ax.add_patch(box((x - _BOX_W / 2 - 0.08, low), _BOX_W + 0.16, high - low + 0.16,
                         boxstyle="round,pad=0,rounding_size=0.1", facecolor="#f3f8fc",
                         edgecolor="#6baed6", linestyle="--", linewidth=0.8, zorder=0))
        ax.text(x, high + 0.08, _shorten(table), ha="center", va="center", fontsize=_FONT,
                fontstyle="italic", color="#3182bd", zorder=3)


def draw_png(G: nx.DiGraph, path: str, *, highlight: dict[str, float] | None = None,
             title: str | None = None, labels: dict[str, str] | None = None,
             code_changes: Iterable[str] = ()) -> None:
    """Write the picture of :func:`draw` to ``path``: SVG if it ends in ``.svg``, else PNG."""
    fig = draw(G, highlight=highlight, title=title, labels=labels, code_changes=code_changes)
    fig.savefig(path, format="svg" if str(path).lower().endswith(".svg") else "png")


# ---------------------------------------------------------------- an attribution on its graph


def subgraph_for_target(G: nx.DiGraph, target: str) -> nx.DiGraph:
    """``target`` and every node it depends on (the part of the run an attribution of it talks about).

    Falls back to the whole graph when ``target`` is not one of its nodes.
    """
    if target not in G:
        return G
    keep = nx.ancestors(G, target) | {target}
    H = G.subgraph(keep).copy()
    outputs = G.graph.get("outputs", {})
    H.graph = {**G.graph, "outputs": {name: o for name, o in outputs.items()
                                      if set(o.get("columns") or []) & keep}}
    return H


def attribution_marks(result: Any) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """What :func:`draw` needs to show an attribution: scores, their labels and the code changes.

    Scores are the contributions of the mechanisms that changed or contributed; labels give the
    contribution in the metric's units and its share of the change (``"+8,120 (87%)"``).
    """
    scores: dict[str, float] = {}
    labels: dict[str, str] = {}
    change = float(getattr(result, "change", 0.0) or 0.0)
    for a in getattr(result, "attributions", []):
        if a.contribution == 0 and not a.mechanism_changed:
            continue
        scores[a.node] = float(a.contribution)
        text = _amount(a.contribution)
        if change:
            text += f" ({a.contribution / change:.0%})"
        labels[a.node] = text
    code = [str(c.get("node")) for c in getattr(result, "code_changes", []) if c.get("node")]
    return scores, labels, code


def plot_graph(G: nx.DiGraph, *, attribution: Any = None, output: str | None = None,
               title: str | None = None, path: str | None = None) -> Figure:
    """The run's DAG as a figure, optionally with an attribution on it; also written to ``path``.

    With ``attribution``, the graph is cut to the target's ancestors, the attributed nodes carry
    their contribution and share of the change, and code changes are marked. ``output`` cuts the
    graph to one output instead.

    >>> fig = plot_graph(store.graph("2026-11-24"), attribution=res)  # doctest: +SKIP
    """
    scores: dict[str, float] = {}
    labels: dict[str, str] = {}
    code: list[str] = []
    if output is not None:
        G = subgraph_for_output(G, output)
    if attribution is not None:
        if output is None:
            G = subgraph_for_target(G, attribution.target)
        scores, labels, code = attribution_marks(attribution)
        if title is None:
            title = f"{attribution.metric_name}: {attribution.baseline_run} \u2192 {attribution.current_run}"
    fig = draw(G, highlight=scores, labels=labels, code_changes=code, title=title)
    if path is not None:
        fig.savefig(path, format="svg" if str(path).lower().endswith(".svg") else "png")
    return fig


def _amount(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:+,.0f}"
    return f"{x:+.3g}"
