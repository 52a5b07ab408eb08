"""The HTML report and the pictures: valid, self-contained, non-trivial, and they open offline in Chromium.

The store is written by hand from the simulated revenue job of ``tests/simulate.py`` (graph, samples
and per-node statistics in the layout of ``docs/internals.md``), so nothing here starts Spark; the
notebooks test covers the same report on really captured runs.

Set ``SPARK_CAUSAL_KEEP_PICTURES=<folder>`` to keep the pictures and the browser screenshot for
looking at them.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import spark_causal
from spark_causal import render, report
from spark_causal.attribution import AttributionConfig, RunSamples
from spark_causal.errors import SparkCausalError
from spark_causal.store import Store
from tests.simulate import make_pair

FAST = AttributionConfig(n_bootstrap=8)
TARGET = "report.revenue"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
                  "--host-resolver-rules=MAP * ~NOTFOUND"]  # no name resolves: the page must need none


# ---------------------------------------------------------------- a store written by hand


def node_stats(table: pd.DataFrame, graph: nx.DiGraph) -> pd.DataFrame:
    """One row per node, the stats contract (count, nulls, mean, std, min, max, top)."""
    rows = []
    for node in graph.nodes:
        attrs = graph.nodes[node]
        if f"__contrib__:{node}" in table.columns:  # an aggregate: one value per group (country)
            col = table.groupby("orders.country")[f"__contrib__:{node}"].sum()
        elif node in table.columns:
            col = table[node]
        else:
            continue
        numeric = pd.api.types.is_numeric_dtype(col)
        top = None if numeric else json.dumps([[str(k), int(v)] for k, v in col.value_counts().head(5).items()])
        rows.append({"node": node, "kind": attrs.get("kind"), "stage": attrs.get("stage"),
                     "column": attrs.get("column"), "dtype": attrs.get("dtype"), "count": int(len(col)),
                     "nulls": int(col.isna().sum()), "mean": float(col.mean()) if numeric else None,
                     "std": float(col.std()) if numeric else None,
                     "min": str(col.min()) if numeric else None, "max": str(col.max()) if numeric else None,
                     "top": top})
    return pd.DataFrame(rows)


def write_store(root: Path, runs: list[RunSamples]) -> str:
    store = Store(str(root))
    for r in runs:
        writer = store.begin(r.run, replace=True)
        writer.write_json("graph.json", nx.node_link_data(r.graph, edges="edges"))
        for sid, seg in r.segments.items():
            writer.write_parquet(f"samples/{sid}.parquet", seg.table)
        table = next(iter(r.segments.values())).table
        writer.write_parquet("stats.parquet", node_stats(table, r.graph))
        writer.commit({"status": "succeeded", "outputs": list(r.graph.graph["outputs"]), "samples": "present",
                       "sample_size": len(table), "seed": 0, "script": "simulate.py"})
    return str(root)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A code change (the formula of report.amount_usd) on a 23-node job, attributed through a store."""
    _, base, cur = make_pair("formula", 11, n=3000, extra=6)
    root = write_store(tmp_path_factory.mktemp("store"), [base, cur])
    res = spark_causal.attribute(root, "baseline", "current", TARGET, config=FAST)
    return root, res


def keep(path: Path) -> None:
    folder = os.environ.get("SPARK_CAUSAL_KEEP_PICTURES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


# ---------------------------------------------------------------- HTML structure


class _Checker(HTMLParser):
    """Balanced tags, and every image and link."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[dict] = []
        self.urls: list[str] = []
        self.counts: dict[str, int] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag == "img":
            self.images.append(a)
        for k in ("src", "href"):
            if a.get(k):
                self.urls.append(a[k])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_html(text: str) -> _Checker:
    c = _Checker()
    c.feed(text)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    return c


def decode_png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    im.load()
    return im


def test_html_report_is_self_contained_and_complete(case, tmp_path):
    root, res = case
    path = tmp_path / "report.html"
    report.write_html(res, str(path), store=root)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    c = check_html(text)
    assert c.counts.get("html") == c.counts.get("head") == c.counts.get("body") == 1
    words = " ".join(" ".join(c.text).split())
    assert res.summary() in words and "report.amount_usd" in res.summary()
    assert all(u.startswith("data:") for u in c.urls), [u[:40] for u in c.urls if not u.startswith("data:")]
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert len(c.images) == 2  # the chart and the graph
    for img in c.images:
        im = decode_png(img["src"])
        assert im.size[0] > 500 and im.size[1] > 250
        assert (int(img["width"]), int(img["height"])) == im.size
    # the sections, the code change and the statistics of the nodes involved
    for heading in ("Attribution", "Where in the job", "Mechanisms", "Code changes", "Statistics of the nodes involved"):
        assert f"<h2>{heading}</h2>" in text
    assert "((amount * rate) * 0.9)" in words and "(amount * rate)" in words
    stats_rows = re.findall(r"<tr><td><code>([^<]+)</code></td><td>(?:stage|source|aggregate|selection|rows)",
                            text.split("Statistics of the nodes involved")[1])
    assert {"report.amount_usd", TARGET} <= set(stats_rows)
    assert "\u2192" in text.split("Statistics of the nodes involved")[1]


def test_report_without_a_store_and_in_notebooks(case):
    _, res = case
    text = report.render_html(res)
    c = check_html(text)
    assert len(c.images) == 1 and "Where in the job" not in text and "Statistics" not in text
    assert res.summary() in " ".join(" ".join(c.text).split())
    fragment = res._repr_html_()
    assert fragment.count("<img") == 1 and "report.amount_usd" in fragment and "<html" not in fragment
    check_html(fragment)


def test_report_notes_what_the_store_cannot_give(case, tmp_path):
    _, res = case
    text = report.render_html(res, store=str(tmp_path / "empty-store"))
    check_html(text)
    assert "could not be read" in text and "no statistics" in text
    with pytest.raises(SparkCausalError):
        report.write_html(res, str(tmp_path / "no" / "such" / "folder" / "r.html"))


# ---------------------------------------------------------------- in a real browser, offline


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed "
                    "(apt-get install -y chromium); the offline browser check needs it")
def test_report_opens_offline_in_headless_chromium(case, tmp_path):
    root, res = case
    path = tmp_path / "report.html"
    report.write_html(res, str(path), store=root)
    probe = tmp_path / "probe.html"  # the report plus a probe that counts decoded images into the title
    script = ("<script>window.addEventListener('load', function () { var n = 0, im = document.images;"
              " for (var i = 0; i < im.length; i++) { if (im[i].complete && im[i].naturalWidth > 0) n++; }"
              " document.title = 'images ' + n + '/' + im.length; });</script>")
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    base = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>([^<]*)</title>", dom.stdout)
    assert title and title.group(1) == "images 2/2", (title and title.group(1), dom.stderr[-1000:])
    assert res.summary().split(";")[0] in dom.stdout
    shot = tmp_path / "report-screenshot.png"
    run = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2000", path.as_uri()],
                         capture_output=True, text=True, timeout=90)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 24)) > 200  # text, chart and graph, not blank
    keep(shot)


# ---------------------------------------------------------------- pictures


def _png_facts(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.size[0], im.size[1], len(im.convert("RGB").getcolors(maxcolors=1 << 24))


def wide_graph(seed: int = 3) -> nx.DiGraph:
    """About 100 nodes shaped like a real job: 6 tables, stages reading 1-3 earlier columns,
    filters and joins, and two outputs with aggregates."""
    rng = np.random.default_rng(seed)
    G = nx.DiGraph()
    earlier: list[str] = []
    for t in range(6):
        for c in range(5 + t % 3):
            node = f"t{t}.col{c}"
            G.add_node(node, kind="source", table=f"t{t}", column=f"col{c}")
            earlier.append(node)
    for s in range(9):
        for c in range(7):
            kind = "selection" if c == 0 else "stage"
            node = f"stage{s}.{'filter' if kind == 'selection' else 'c'}{c}"
            G.add_node(node, kind=kind, stage=f"stage{s}", column=node.split(".")[1])
            for p in rng.choice(earlier, size=int(rng.integers(1, 4)), replace=False):
                G.add_edge(str(p), node, kind="filter" if kind == "selection" else str(
                    rng.choice(["direct", "direct", "join", "window"])))
            earlier.append(node)
    for o in range(2):
        for c in range(3):
            node = f"out{o}.agg{c}"
            G.add_node(node, kind="aggregate", stage=f"out{o}", column=f"agg{c}", output=f"out{o}")
            for p in rng.choice(earlier[-30:], size=3, replace=False):
                G.add_edge(str(p), node, kind="direct")
            G.add_edge(str(rng.choice(earlier[:20])), node, kind="group")
    return G


def test_pictures_are_valid_nontrivial_images(case, tmp_path):
    root, res = case
    bar, waterfall = tmp_path / "attribution-bar.png", tmp_path / "attribution-waterfall.png"
    res.plot(str(bar))
    res.plot(str(waterfall), kind="waterfall")
    svg = tmp_path / "attribution.svg"
    res.plot(str(svg), kind="waterfall")
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()
    for p in (bar, waterfall):
        w, h, colours = _png_facts(p)
        assert w >= 700 and h >= 300 and colours > 30 and p.stat().st_size > 15_000
    with pytest.raises(ValueError):
        res.plot(kind="pie")

    G = Store(root).graph("current")
    assert 20 <= G.number_of_nodes() <= 25
    small = tmp_path / "dag-23-nodes.png"
    scores, labels, code = render.attribution_marks(res)
    assert "report.amount_usd" in scores and labels["report.amount_usd"].endswith("%)") and code
    render.draw_png(G, str(small), highlight=scores, labels=labels, code_changes=code, title="23 nodes")
    fig = render.plot_graph(G, attribution=res)  # cut to the target's ancestors
    assert fig.get_figwidth() > 6
    big_graph = wide_graph()
    assert 95 <= big_graph.number_of_nodes() <= 110
    big = tmp_path / "dag-100-nodes.png"
    render.draw_png(big_graph, str(big), highlight={"t2.col1": -900.0, "stage4.c3": 300.0},
                    labels={"t2.col1": "-900 (75%)", "stage4.c3": "+300 (25%)"}, code_changes=["stage4.c3"],
                    title="~100 nodes")
    (ws, hs, cs), (wb, hb, cb) = _png_facts(small), _png_facts(big)
    assert ws > 800 and hs > 400 and cs > 50
    assert hb > hs and wb > 1500 and cb > 50
    for p in (bar, waterfall, small, big):
        keep(p)
