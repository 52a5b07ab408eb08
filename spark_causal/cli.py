"""The ``spark-causal`` command: capture runs, list them, export their graphs and statistics.

Each subcommand is one ``_add_<name>(subparsers)`` function that registers its parser and handler;
``_SUBCOMMANDS`` lists them, so a new subcommand is one function and one line. Imports of pyspark,
pandas and matplotlib happen inside the handlers: ``spark-causal --help`` stays instant.

Every :class:`~spark_causal.errors.SparkCausalError` becomes two lines on stderr (the error and a
hint) and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spark_causal.errors import SparkCausalError, StoreError

if TYPE_CHECKING:
    import pandas as pd

    from spark_causal.store import Store

_STATS_KEYS = ("node", "kind", "stage", "column", "count", "nulls", "mean", "std", "min", "max", "top")


def _subparser(subparsers: Any, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with examples, laid out as written."""
    return subparsers.add_parser(
        name, help=summary, description=summary,
        epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _open_store(args: argparse.Namespace) -> Store:
    from spark_causal.store import Store

    return Store(args.store)


def _write_text(text: str, path: str | None, flag: str = "-o") -> None:
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise SparkCausalError(f"cannot write {path}: {e.strerror}", hint=f"check the {flag} path") from None
    print(f"wrote {path}", file=sys.stderr)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns: readable in a terminal and in a CI log, no dependency. Control characters
    in values (a newline inside a text value) are shown escaped, so a row stays one line."""
    rows = [[c.encode("unicode_escape").decode("ascii") if not c.isprintable() else c for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines) + "\n"


# ---------------------------------------------------------------- capture


def _add_capture(subparsers: Any) -> None:
    p = _subparser(
        subparsers, "capture", "Run an unmodified PySpark script and store its graph, statistics and samples.",
        "  spark-causal capture --store ./store --run 2026-11-24 -- job.py --date 2026-11-24\n"
        "  spark-causal capture --store s3a://bucket/causal --run v2 --replace --sample-size 50000 -- job.py\n"
        "  spark-causal capture --store ./store --run quick --no-samples -- job.py\n\n"
        "The script runs as __main__ with its own arguments (after --); its exit code is returned.",
    )
    p.add_argument("--store", required=True, help="store folder or Hadoop URI")
    p.add_argument("--run", required=True, help="run id, e.g. a date: letters, digits, '._-'")
    p.add_argument("--replace", action="store_true", help="overwrite an existing run of the same id")
    p.add_argument("--sample-size", type=int, default=20000, metavar="N",
                   help="units sampled per segment (default 20000)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sampling hash (default 0)")
    p.add_argument("--no-samples", action="store_true", help="store statistics only, no unit-level samples")
    p.add_argument("--strict", action="store_true",
                   help="fail when capture itself fails (default: warn, the job continues)")
    p.add_argument("script", help="the PySpark script to run")
    p.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments of the script")
    p.set_defaults(handler=_capture)


def _capture(args: argparse.Namespace) -> int:
    from spark_causal.capture import run_script

    return run_script(  # argparse has already dropped the "--" that separates the script
        args.script, args.script_args, store=args.store, run=args.run, replace=args.replace,
        sample_size=args.sample_size, seed=args.seed, samples=not args.no_samples, strict=args.strict,
    )


# ---------------------------------------------------------------- runs


def _add_runs(subparsers: Any) -> None:
    p = _subparser(
        subparsers, "runs", "List the runs of a store, oldest first.",
        "  spark-causal runs --store ./store\n"
        "  spark-causal runs --store ./store --json | jq '.[].run'\n",
    )
    p.add_argument("--store", required=True, help="store folder or Hadoop URI")
    p.add_argument("--json", action="store_true", help="print the meta of every run as a JSON list")
    p.set_defaults(handler=_runs)


def _runs(args: argparse.Namespace) -> int:
    from spark_causal.store import dump_json

    metas = _open_store(args).runs()
    if args.json:
        _write_text(dump_json(metas), None)
    elif not metas:
        print(f"no runs in {args.store}", file=sys.stderr)
    else:
        headers = ["run", "status", "started", "ended", "outputs", "samples"]
        rows = [[str(m.get("run", "")), str(m.get("status", "")), str(m.get("started") or ""),
                 str(m.get("ended") or ""), ",".join(m.get("outputs") or []) or str(m.get("error") or ""),
                 str(m.get("samples") or "")]
                for m in metas]
        _write_text(_table(headers, rows), None)
    return 0


# ---------------------------------------------------------------- graph


def _add_graph(subparsers: Any) -> None:
    p = _subparser(
        subparsers, "graph", "Export the column-level causal graph of a run.",
        "  spark-causal graph --store ./store --run 2026-11-24 --format json > graph.json\n"
        "  spark-causal graph --store ./store --run 2026-11-24 --output revenue --format dot | dot -Tsvg > g.svg\n"
        "  spark-causal graph --store ./store --run 2026-11-24 --format png -o graph.png\n\n"
        "json and dot go to stdout unless -o is given; png and svg are written to -o\n"
        "(default <run>.png, or <run>-<output>.png with --output).",
    )
    p.add_argument("--store", required=True, help="store folder or Hadoop URI")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--output", metavar="NAME", help="only this output's columns and their ancestors")
    p.add_argument("--format", choices=("json", "dot", "png", "svg"), default="json", help="default json")
    p.add_argument("-o", dest="out", metavar="FILE", help="file to write")
    p.set_defaults(handler=_graph)


def _graph(args: argparse.Namespace) -> int:
    from spark_causal import render

    G = _open_store(args).graph(args.run)
    if args.output:
        G = render.subgraph_for_output(G, args.output)
    if args.format == "json":
        _write_text(render.to_json(G), args.out)
    elif args.format == "dot":
        _write_text(render.to_dot(G), args.out)
    else:
        name = f"{args.run}-{args.output}" if args.output else args.run
        out = args.out or f"{name}.{args.format}"
        title = f"run {args.run}" + (f": {args.output}" if args.output else "")
        try:
            render.draw_png(G, out, title=title)
        except OSError as e:
            raise SparkCausalError(f"cannot write {out}: {e.strerror}", hint="check the -o path") from None
        print(f"wrote {out} ({G.number_of_nodes()} nodes, {G.number_of_edges()} edges)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- stats


def _add_stats(subparsers: Any) -> None:
    p = _subparser(
        subparsers, "stats", "Print the per-node statistics of a run.",
        "  spark-causal stats --store ./store --run 2026-11-24\n"
        "  spark-causal stats --store ./store --run 2026-11-24 --output revenue --json\n",
    )
    p.add_argument("--store", required=True, help="store folder or Hadoop URI")
    p.add_argument("--run", required=True, help="run id")
    p.add_argument("--output", metavar="NAME", help="only nodes of this output's graph")
    p.add_argument("--json", action="store_true", help="a JSON list: " + ", ".join(_STATS_KEYS))
    p.set_defaults(handler=_stats)


def _stats(args: argparse.Namespace) -> int:
    from spark_causal.store import dump_json

    store = _open_store(args)
    if "stats.parquet" not in store.list(args.run):
        raise StoreError(
            f"run {args.run!r} has no statistics (stats.parquet)",
            hint="it was captured before statistics existed or failed before computing them; capture it again",
        )
    df = store.read_parquet(args.run, "stats.parquet")
    if args.output:
        from spark_causal.render import subgraph_for_output

        df = df[df["node"].isin(subgraph_for_output(store.graph(args.run), args.output).nodes)]
    records = _stats_records(df)
    if args.json:
        _write_text(dump_json(records), None)
    else:
        headers = ["node", "kind", "count", "nulls", "mean", "std", "min", "max", "top"]
        rows = [[_cell(r[h]) for h in headers] for r in records]
        _write_text(_table(headers, rows), None)
    return 0


def _stats_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One plain dict per node with exactly the contract's keys; ``top`` decoded, NaN as None."""
    records = []
    for row in df.to_dict(orient="records"):
        record = {k: _plain(row.get(k)) for k in _STATS_KEYS}
        record["top"] = json.loads(record["top"]) if isinstance(record["top"], str) else None
        records.append(record)
    return records


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):  # top values
        shown = ", ".join(f"{v}:{c}" for v, c in value[:3])
        return shown + (" ..." if len(value) > 3 else "")
    return str(value)


# ---------------------------------------------------------------- main

# ---------------------------------------------------------------- attribute


def _add_attribute(subparsers: Any) -> None:
    p = _subparser(
        subparsers, "attribute", "Why did a metric move between two runs? Ranks sources, stages and volume.",
        "  spark-causal attribute --store ./store --baseline 2026-11-23 --current 2026-11-24 --target revenue.revenue\n"
        "  spark-causal attribute --store ./store --baseline a --current b --target revenue.orders --agg count \\\n"
        "      --where \"country = 'DE'\" --json result.json --html report.html --plot chart.png\n",
    )
    p.add_argument("--store", required=True, help="store folder or Hadoop URI")
    p.add_argument("--baseline", required=True, help="run id of the baseline (before)")
    p.add_argument("--current", required=True, help="run id of the current run (after)")
    p.add_argument("--target", required=True, help="output column id, <output>.<column>")
    p.add_argument("--agg", choices=("sum", "count", "mean"), default="sum",
                   help="sum: the column's total over the output's rows (default); count: the input rows (units) "
                   "it is computed from; mean: the average per such input row, a ratio of sums (for an avg() "
                   "column, its overall average)")
    p.add_argument("--where", default=None, help="SQL predicate on the output's columns, e.g. \"country = 'DE'\"")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and Shapley draws (default 0)")
    p.add_argument("--json", metavar="FILE", help="write the result as JSON ('-' for stdout)")
    p.add_argument("--html", metavar="FILE", help="write an HTML report")
    p.add_argument("--plot", metavar="FILE", help="write the attribution chart (PNG, or SVG by extension)")
    p.set_defaults(handler=_attribute)


def _attribute(args: argparse.Namespace) -> int:
    from spark_causal.attribution import AttributionConfig
    from spark_causal.compare import attribute

    print(f"attributing {args.agg}({args.target}) from {args.baseline} to {args.current} ...", file=sys.stderr)
    res = attribute(_open_store(args), args.baseline, args.current, args.target, agg=args.agg, where=args.where,
                    config=AttributionConfig(seed=args.seed))
    if args.json == "-":
        _write_text(res.to_json(), None)
    else:
        if args.json:
            _write_text(res.to_json(), args.json, "--json")
        _write_text(_attribution_table(res), None)
    if args.html:
        from spark_causal.report import write_html

        write_html(res, args.html, store=_open_store(args))
        print(f"wrote {args.html}", file=sys.stderr)
    if args.plot:
        try:
            res.plot(args.plot)
        except OSError as e:
            raise SparkCausalError(f"cannot write {args.plot}: {e.strerror}", hint="check the --plot path") from None
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _attribution_table(res: Any) -> str:
    rows = [[a.node, a.kind, f"{a.contribution:+,.4g}", f"[{a.ci_low:+,.4g}, {a.ci_high:+,.4g}]",
             "yes" if a.mechanism_changed else "", "" if a.p_value is None else f"{a.p_value:.2g}"]
            for a in res.attributions]
    head = (f"{res.summary()}\n{res.baseline_run}: {res.baseline_value:,.6g}   {res.current_run}: "
            f"{res.current_value:,.6g}   change: {res.change:+,.6g}   significant: {res.significant}\n\n")
    body = _table(["node", "kind", "contribution", "interval", "changed", "p"], rows) if rows else "(no attributions)\n"
    notes = "".join(f"code change: {c.get('node')}\n" for c in res.code_changes)
    notes += "".join(f"warning: {w}\n" for w in res.warnings)
    return head + body + notes


_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    _add_capture,
    _add_runs,
    _add_graph,
    _add_stats,
    _add_attribute,
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser; public so docs and tests can render ``--help``."""
    parser = argparse.ArgumentParser(
        prog="spark-causal",
        description="Why did the metric move? Capture PySpark runs as column-level causal graphs, "
        "then compare them.",
        epilog="examples:\n"
        "  spark-causal capture --store ./store --run 2026-11-24 -- job.py\n"
        "  spark-causal runs --store ./store\n"
        "  spark-causal graph --store ./store --run 2026-11-24 --format png -o graph.png\n"
        "  spark-causal stats --store ./store --run 2026-11-24\n\n"
        "spark-causal COMMAND --help shows each command's options and examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad usage or a spark-causal error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): return it, don't exit a caller's process
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.handler(args)
    except SparkCausalError as e:
        print(f"spark-causal: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2


def entry() -> None:
    """The ``spark-causal`` command: :func:`main`, then the process ends without tearing down the
    interpreter's native libraries. pyarrow's Parquet reader threads, still alive at that teardown, made
    ~4% of ``attribute`` calls abort after printing their result ("terminate called without an active
    exception", exit 134; apache/arrow#34314). Exit handlers (the job's own, Spark's) still run first."""
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
