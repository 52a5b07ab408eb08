"""Capture: see every output an unmodified PySpark job writes, and turn it into a stored run.

Hooks wrap the write methods of ``DataFrameWriter`` / ``DataFrameWriterV2`` and ``SparkSession.sql``.
A ``DataFrameWriter`` (V1) write, or a SQL statement that writes (analysed before it runs), runs the
job's plan with observation probes (``observe``), which measure the statistics while the job runs and
change no row; if the probes cannot be set up, the job writes its own plan. Other writes run
untouched and are measured afterwards by an extra pass. Only
then is the analysed plan read, so capture never changes what the job writes; anything that fails
inside spark-causal is logged and recorded in the run (the run is then ``incomplete``), unless the
user asked for strict mode.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import operator
import os
import runpy
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import networkx as nx

from . import plan as P
from . import sampling
from .errors import CaptureError, SparkCausalError, UnknownRunError
from .lineage import LineageBuilder
from .observe import Observed, observe
from .stats import MAX_KNOWN_VALUES, VALUES, SampleHints, compute_stats, selection_stats
from .store import file_name, store_root

log = logging.getLogger("spark_causal")

_V1_METHODS = ("save", "parquet", "csv", "json", "orc", "text", "saveAsTable", "insertInto", "jdbc")
_V2_METHODS = ("create", "replace", "createOrReplace", "append", "overwrite", "overwritePartitions")
_state = threading.local()
_active: list["Capture"] = []
_lock = threading.RLock()


@dataclass(frozen=True)
class CaptureOptions:
    """How a run is captured; recorded in the run's meta so that two runs can be compared fairly."""

    sample_size: int = 20_000
    seed: int = 0
    samples: bool = True
    strict: bool = False


@dataclass
class Capture:
    """One run being captured. ``graph`` is the run's DAG, complete once the context has exited."""

    store: str
    run: str
    options: CaptureOptions
    replace: bool = False
    script: str | None = None
    args: list[str] = field(default_factory=list)
    builder: LineageBuilder = field(default_factory=LineageBuilder)
    errors: list[str] = field(default_factory=list)
    started: str = field(default_factory=lambda: _now())
    spark: Any = None
    tables: dict[str, Any] = field(default_factory=dict)  # parquet files of the run: name -> pandas frame
    stats: list[dict] = field(default_factory=list)
    _writer: Any = None
    _previous: dict | None = None  # graph attributes of the store's latest committed run (``_history``)
    _pending_errors: list[tuple[str, BaseException]] = field(default_factory=list)

    @property
    def graph(self) -> nx.DiGraph:
        return self.builder.graph

    # ------------------------------------------------------------------------------ outputs
    def record(self, df: Any, *, name: str | None, path: str | None = None, table: str | None = None,
               fmt: str | None = None, mode: str | None = None, plan: Any = None,
               observed: Observed | None = None) -> None:
        """Record one output: its lineage now (views may be replaced later), then statistics/samples.

        ``observed``, when the write ran with probes, must come with the very ``plan`` it was built from.
        """
        try:
            self.spark = self.spark or df.sparkSession
            if plan is None:
                plan = P.analyzed(df)
            name = name or _output_name(table, path) or f"output{len(self.graph.graph['outputs']) + 1}"
            used = self.builder.add_output(name, plan, path=path, table=table, fmt=fmt, mode=mode)
            log.info("spark-causal: captured output %s (%d graph nodes so far)", used, self.graph.number_of_nodes())
        except SparkCausalError:
            raise
        except Exception as exc:  # noqa: BLE001 - capture must not fail the job
            self._fail_soft(f"lineage of output {name!r} failed: {_one_line(exc)}", exc)
            return
        try:
            self._measure(used, plan, observed, {"path": path, "table": table, "fmt": fmt, "mode": mode})
        except CaptureError:
            raise
        except Exception as exc:  # noqa: BLE001 - each step guards itself; this is for what they did not foresee
            self._fail_soft(f"statistics or samples of output {used!r} failed: {_one_line(exc)}", exc)

    def _measure(self, used: str, plan: Any, observed: Observed | None, where: dict) -> None:
        """Statistics, samples and kept rows of output ``used`` (``record``), its lineage being known."""
        rows, found, lost = None, [], []
        if observed is not None:
            try:
                found, rows, lost = observed.statistics(self.graph, self.builder.walks[used],
                                                        self.graph.graph["outputs"][used]["columns"])
                self.graph.graph["outputs"][used]["group_shares"] = observed.group_shares(rows)
                self.graph.graph["outputs"][used]["averaged_inputs"] = observed.averaged_inputs(self.builder.walks[used])
                self.graph.graph["outputs"][used]["ratio_totals"] = observed.ratio_totals(self.builder.walks[used])
            except Exception as exc:  # noqa: BLE001
                self._fail_soft(f"inline statistics of output {used!r} failed: {_one_line(exc)}", exc)
                rows = None
        if rows is None:
            rows = self._measure_by_extra_pass(used, plan, **where)
            self._sample(used, plan, rows)
            self._keep_rows(used, **where)
            return
        # sources measured apart (read again) come first when an earlier run tells their few-valued strings:
        # their stats are over every row read, and their row counts spare the sampled pass a count. A
        # first run samples first, and the sample tells those strings (either way the reread reads once)
        walk = self.builder.walks[used]
        strings = {n for _, columns in observed.deferred for c in columns
                   if c.dtype == "string" and (n := walk.node(c.expr_id, c.unions))}
        hints = self._source_hints(strings) if observed.deferred else None
        if hints is not None:
            rows = {**rows, **self._reread(used, observed, hints)}
        segments = self._sample(used, plan, rows)
        if hints is None and observed.deferred:
            told = [sampling.reread_hints(seg, self.graph, most=MAX_KNOWN_VALUES) for seg in segments]
            self._reread(used, observed, SampleHints(values={n: v for h in told for n, v in h.values.items()}))
        self._add_stats(found)
        if lost:  # an empty probe's columns
            log.info("spark-causal: measuring %s apart", ", ".join(lost))
            self._measure_by_extra_pass(used, plan, **where)
        self._measure_subquery_sources(used, plan)
        self._keep_rows(used, **where)

    def _reread(self, output: str, observed: Observed, hints: SampleHints) -> dict[int, int]:
        """Stats of the sources the probes left to be read again (``Observed.reread``); returns their row
        counts by plan hashCode (empty when that failed)."""
        try:
            found, counted = observed.reread(self.spark, self.graph, self.builder.walks[output], hints)
        except Exception as exc:  # noqa: BLE001
            self._fail_soft(f"statistics of the sources of output {output!r} failed: {_one_line(exc)}", exc)
            return {}
        self._add_stats(found)
        kept: dict[str, list[str] | None] = {}
        for r in found:  # a table read twice (two partitions) hints both reads: the union of their values
            if VALUES not in r:
                continue
            before = kept.get(r["node"], [])
            both = None if r[VALUES] is None or before is None else sorted(set(before) | set(r[VALUES]))
            kept[r["node"]] = both if both is not None and len(both) <= MAX_KNOWN_VALUES else None
        if kept:
            self.graph.graph["outputs"][output]["string_values"] = kept
        return counted

    def _keep_rows(self, output: str, *, path: str | None, table: str | None, fmt: str | None,
                   mode: str | None) -> None:
        """The rows of a small output (no more rows than the sample size), read back and kept with the
        run: the exact value of a ``where`` slice of its sums is a sum over them, where the statistics
        only hold whole columns and the samples estimate. A larger output, or one appended to, is not."""
        cols = set(self.graph.graph["outputs"][output]["columns"])
        counts = [s["count"] for s in self.stats if s["node"] in cols]
        if not self.options.samples or not counts or max(counts) > self.options.sample_size or \
                not _replaces(fmt, mode):
            return
        try:
            frame = _local_parquet(path) if fmt == "parquet" and not table else None
            if frame is None:
                df = _read_back(self.spark, path=path, table=table, fmt=fmt)
                frame = sampling._to_pandas(df) if df is not None else None
            if frame is not None:
                frame.columns = [f"{output}.{c}" for c in frame.columns]
                self.tables[f"outputs/{file_name(output)}.parquet"] = frame[[c for c in frame.columns if c in cols]]
        except Exception as exc:  # noqa: BLE001 - a slice's values are then the samples' estimates
            log.info("spark-causal: the rows of output %s were not kept: %s", output, _one_line(exc))

    def _measure_subquery_sources(self, output: str, plan: Any) -> None:
        """Sources read only inside subqueries (``x IN (SELECT ...)``, a scalar threshold) carry no
        probe: the columns the job reads from them are measured by one aggregation after the write,
        whole, as the subquery reads them (they are usually small lookup tables)."""
        walk = self.builder.walks[output]
        have = {s["node"] for s in self.stats}
        needed = P.needed_ids(plan)
        relations = []
        for leaf, unions in _leaves(plan):
            mapping = {c: nid for c, nid in _leaf_nodes(walk, leaf, unions, needed).items() if nid not in have}
            if mapping:
                have.update(mapping.values())
                relations.append((P.to_dataframe(self.spark, leaf).select([P.quoted(c) for c in mapping]), mapping))
        if relations:
            try:
                self._add_stats(compute_stats(self.graph, relations, sketches=False))
            except Exception as exc:  # noqa: BLE001
                self._fail_soft(f"statistics of the subquery sources of output {output!r} failed: "
                                f"{_one_line(exc)}", exc)

    def _add_stats(self, found: list[dict]) -> None:
        """Keep the first stats row of each node: a node shared by several outputs, or a relation the plan
        reads twice (a self-join, a table and its DISTINCT), is measured once."""
        have = {s["node"] for s in self.stats}
        for s in found:
            if s["node"] not in have:
                have.add(s["node"])
                self.stats.append(s)

    def _measure_by_extra_pass(self, output: str, plan: Any, *, path: str | None, table: str | None,
                               fmt: str | None, mode: str | None) -> dict[int, int]:
        """Exact statistics by one extra job over the leaves, the written output and, per segment, an
        unsampled provenance query: for writes that could not carry probes (SQL statements, V2 writers),
        and for the nodes that probes did not measure. Returns row counts by source relation (plan
        hashCode), so sampling need not count them again."""
        from pyspark.sql import functions as F

        walk = self.builder.walks[output]
        relations: list[tuple[Any, dict[str, str]]] = []
        counted: dict[int, str] = {}  # source relation -> one of its columns' node, whose count is its rows
        for seg_plan in sampling.segment_plans(plan):
            try:  # one unsampled pass per segment gives exact stats of its stage columns
                prov = sampling.provenance(self.spark, self.builder, output, seg_plan, sample_size=None,
                                           seed=self.options.seed)
            except Exception as exc:  # noqa: BLE001
                self._fail_soft(f"provenance of output {output!r} failed: {_one_line(exc)}", exc)
                continue
            mapping = {n: n for n in prov.names if n in self.graph and self.graph.nodes[n]["kind"] == "stage"}
            # over the units the job kept, as a probe would see them: SQL filters and joins come before
            # the select list (selections themselves are estimated from the sample, as inline)
            kept = [F.col(P.quoted(s)) for s, drops in prov.drops.items() if drops and s in prov.names]
            if mapping:
                relations.append((prov.df.filter(functools.reduce(operator.and_, kept)) if kept else prov.df,
                                  mapping))
        partitions = P.partition_filters(plan)
        for leaf, unions in _leaves(plan):  # sources as read (their partitions): a plain scan, no joins to redo
            mapping = _leaf_nodes(walk, leaf, unions)
            relations.append((P.to_dataframe(self.spark, P.restrict(leaf, partitions)), mapping))
            if mapping:
                counted.setdefault(int(leaf.hashCode()), next(iter(mapping.values())))
        # the rows the write wrote: read back where the write replaced its target whole (cheaper than
        # recomputing), else recomputed, as probes measure them (an INSERT INTO a table with rows)
        out_df = (_read_back(self.spark, path=path, table=table, fmt=fmt) if _replaces(fmt, mode) else None) or \
            P.to_dataframe(self.spark, plan)
        cols = self.graph.graph["outputs"][output]["columns"]
        # the output first: a group key derived in the job is one node with its column before the aggregation
        relations.insert(0, (out_df, dict(zip(out_df.columns, cols))))
        have = {s["node"] for s in self.stats}
        todo = []
        for rel, mapping in relations:  # each node once: the first relation that has it
            mapping = {c: n for c, n in mapping.items() if n not in have}
            have.update(mapping.values())
            todo.append((rel, mapping))
        try:
            self._add_stats(compute_stats(self.graph, todo, sketches=False))
        except Exception as exc:  # noqa: BLE001
            self._fail_soft(f"statistics of output {output!r} failed: {_one_line(exc)}", exc)
        counts = {s["node"]: s["count"] for s in self.stats}
        return {h: counts[n] for h, n in counted.items() if n in counts}

    def _sample(self, output: str, plan: Any, rows: dict[int, int]) -> list[Any]:
        """The unit sample of each segment: one sampled pass over its driving relation, whose row count
        (``rows``, by plan hashCode) spares a count() when the statistics already have it. Returns the
        segments sampled."""
        done: list[sampling.Segment] = []
        if not self.options.samples or self.options.sample_size == 0:
            return done
        for k, seg_plan in enumerate(sampling.segment_plans(plan)):
            segment = f"{output}.seg{k + 1}"
            previous = self._previous_segment(segment)
            try:
                seg = sampling.sample_output(self.spark, self.builder, output, seg_plan, segment=segment,
                                             sample_size=self.options.sample_size, seed=self.options.seed, known=rows,
                                             prefer=previous.get("driving"), windowed=self._windowed(previous))
            except Exception as exc:  # noqa: BLE001
                self._fail_soft(f"samples of output {output!r} (segment {k + 1}) failed: {_one_line(exc)}", exc)
                continue
            self.graph.graph["segments"].append(seg.description)
            self.tables[f"samples/{file_name(seg.description['id'])}.parquet"] = seg.table
            self._add_stats(selection_stats(self.graph, seg.table, seg.description))
            done.append(seg)
        return done

    def _history(self) -> dict:
        """The graph attributes (outputs, segments) of the store's latest committed run; empty when none."""
        if self._previous is None:
            self._previous = {}
            try:
                from .store import Store

                store = Store(self.store, spark=self.spark)
                done = [m["run"] for m in store.runs() if m.get("status") == "succeeded" and m.get("run") != self.run]
                if done:
                    self._previous = dict(store.graph(done[-1]).graph)
            except Exception as exc:  # noqa: BLE001 - a first run, or an unreadable store: no history
                log.debug("spark-causal: no previous run to learn from: %s", _one_line(exc))
        return self._previous

    def _source_hints(self, strings: set[str]) -> SampleHints | None:
        """The values of the few-valued strings of sources read again (``strings``, their nodes), as the
        store's latest committed run counted them all (its outputs' ``string_values``), for reading the
        sources again (``stats.compute_stats``). None when there is no earlier run, or when it did not
        read one of those strings (another job's run): this run's sample must then tell their values,
        as a first run's does. A value new in this run makes the counts fall short, and the column is
        then grouped: a stale hint costs time, never a wrong number."""
        history = self._history()
        if not history:
            return None
        kept: dict[str, Any] = {}
        for entry in (history.get("outputs") or {}).values():
            values = entry.get("string_values") if isinstance(entry, dict) else None
            kept.update(values if isinstance(values, dict) else {})
        if not strings <= set(kept):
            return None
        return SampleHints(values={str(n): tuple(str(x) for x in v) for n, v in kept.items() if isinstance(v, list)})

    def _group_history(self, name: str | None) -> dict:
        """The group shares of output ``name``'s Aggregates in the store's latest committed run (empty
        when none): how many groups they made of their rows decides where this run measures the columns
        they aggregate (``observe``). Only a cost decision: the statistics are exact either way."""
        shares = (self._history().get("outputs") or {}).get(name or "", {}).get("group_shares")
        return shares if isinstance(shares, dict) else {}

    def _previous_segment(self, segment: str) -> dict:
        """The description of ``segment`` in the store's latest committed run ({} when none). Its driving
        table: this run keeps those units when its rows are comparable (``sampling.driving_relation``),
        so that duplicated rows that make a joined table the larger one do not make the two runs' units
        different things."""
        return next((d for d in self._history().get("segments") or [] if d.get("id") == segment), {})

    def _windowed(self, desc: dict) -> str | None:
        """How a segment's previous run (``desc``, its description) related its units to the windows on its
        driving path (``sampling.PARTITIONS``, ``AFTER``, ``ROWS``; None: no such run, or no window on its
        driving path then), which this run follows (``sampling.sample_output``)."""
        if not desc:
            return None
        if desc.get("window_mode"):
            return desc["window_mode"]
        if desc.get("windows"):  # a store's older runs
            return sampling.PARTITIONS
        # its window ended the driving path: the units were that window's result rows
        windows = {n for n, d in self.graph.nodes(data=True) if d.get("subtype") == "window"}
        return sampling.ROWS if windows & set(desc.get("nodes") or []) else None

    def observe_write(self, writer: Any, target: tuple[str | None, str | None],
                      name: str | None = None) -> tuple[Any, Observed | None, Callable[[], None]]:
        """Make a V1 writer write the job's plan with probes instead of the plan itself.

        Returns (the plan probes and lineage share, the probes or None, a function restoring the writer).
        Anything failing here leaves the writer as it was: the job writes exactly what it would have.
        """
        plan = None  # not analysable here: record() tries again after the write, and reports why
        try:
            plan = P.analyzed(writer._df)
            self.spark = self.spark or writer._df.sparkSession
            observed = observe(self.spark, plan, target, self._group_history(name or _output_name(target[1], target[0])))
            restore = P.replace_writer_df(writer._jwrite, observed.df._jdf)
        except Exception as exc:  # noqa: BLE001 - reported once the job's write has run
            self._pending_errors.append((f"inline statistics could not be set up: {_one_line(exc)}", exc))
            return plan, None, lambda: None
        return plan, observed, restore

    def observe_sql(self, spark: Any, *args: Any, **kwargs: Any) -> tuple | None:
        """For a SQL write statement: (the command writing the query with probes, the query, table,
        path, the probes); None for any other statement, or when probes cannot be set up (the caller
        then runs the statement as given). Parameterised statements are left as given."""
        if len(args) != 1 or kwargs or not isinstance(args[0], str):
            return None
        try:
            command = P.analyze_write_statement(spark, args[0])
            write = P.unwrap_write(command) if command is not None else None
            if write is None:
                return None
            query, table, path = write
            observed = observe(spark, query, (path, table), self._group_history(_output_name(table, path)))
            probed = P.with_query(command, observed.df._jdf.queryExecution().analyzed())
            P.analyze_only(spark, probed)  # what would fail to analyse fails here, before anything runs
        except Exception as exc:  # noqa: BLE001 - the statement runs as given, measured by an extra pass
            log.info("spark-causal: no inline statistics for a SQL statement: %s", _one_line(exc))
            return None
        return probed, query, table, path, observed

    def _fail_soft(self, message: str, exc: BaseException) -> None:
        self.errors.append(message)
        log.warning("spark-causal: %s", message)
        log.debug("".join(traceback.format_exception(exc)))
        if self.options.strict:
            raise CaptureError(message, hint="run without --strict to let the job finish regardless") from exc

    # ------------------------------------------------------------------------------ commit
    def commit(self, *, status: str, error: str | None) -> None:
        from . import __version__
        from .store import Store

        spark_version = None
        if self.spark is not None:
            with contextlib.suppress(Exception):
                spark_version = self.spark.version
        writer = self._writer or Store(self.store, spark=self.spark).begin(self.run, replace=self.replace)
        if status == "failed" and self.replace and _committed(writer.store, self.run):
            # --replace asks for a better run, not for losing a good one to a job that failed
            writer.abort()
            log.warning("spark-causal: the job failed; run %r is kept as it was, not replaced", self.run)
            return
        try:
            writer.write_json("graph.json", nx.node_link_data(self.graph, edges="edges"))
            if self.stats:
                import pandas as pd

                writer.write_parquet("stats.parquet", pd.DataFrame([{k: v for k, v in s.items() if k != VALUES}
                                                                    for s in self.stats]))
            for name, frame in self.tables.items():
                writer.write_parquet(name, frame)
            if not self.graph.graph["outputs"] and status == "succeeded":
                self.errors.append("the job wrote no output that capture saw (a DataFrameWriter or SQL write, "
                                   "or spark_causal.register_output for a job that collects)")
                log.warning("spark-causal: %s", self.errors[-1])
            if self.errors and status == "succeeded":
                status = "incomplete"
            writer.commit({
                "run": self.run, "spark_causal_version": __version__, "spark_version": spark_version,
                "script": self.script, "args": list(self.args), "started": self.started, "ended": _now(),
                "status": status, "error": error, "capture_errors": list(self.errors),
                "outputs": list(self.graph.graph["outputs"]),
                "samples": "disabled" if not self.options.samples else
                ("present" if any(n.startswith("samples/") for n in self.tables) else "missing"),
                "sample_size": self.options.sample_size, "seed": self.options.seed,
            })
        except BaseException:
            writer.abort()
            raise


def _committed(store: Any, run: str) -> bool:
    try:
        store.meta(run)
        return True
    except UnknownRunError:
        return False


# ---------------------------------------------------------------------------------------- hooks
def _current() -> Capture | None:
    return _active[-1] if _active else None


def _hooked(original: Callable, describe: Callable[..., dict], *, inline: bool = False) -> Callable:
    """Wrap a write method: run it, then record the output (once, even if methods nest).

    ``inline`` (V1 writers): the write runs the job's plan with probes (``observe``), so the job's own
    execution measures the statistics; the rows written are the same.
    """

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        cap = _current()
        if cap is None or getattr(_state, "inside", False):
            return original(self, *args, **kwargs)
        try:  # where it writes, known before it runs: a source read from there is not read again after
            info, failed = describe(self, *args, **kwargs), None
        except Exception as exc:  # noqa: BLE001 - reported once the job's write has run
            info, failed = {}, exc
        plan, observed, restore = (cap.observe_write(self, (info.get("path"), info.get("table")), info.get("name")) if inline
                                   else (None, None, lambda: None))
        _state.inside = True
        try:
            result = original(self, *args, **kwargs)
        finally:
            _state.inside = False
            restore()  # a writer may be used again (w.parquet(a); w.parquet(b)): each write gets its probes
        for message, exc in cap._pending_errors:
            cap._fail_soft(message, exc)
        cap._pending_errors.clear()
        if failed is not None:
            cap._fail_soft(f"could not describe a write: {_one_line(failed)}", failed)
            return result
        if inline:
            try:
                info["mode"] = P.writer_mode(self._jwrite, inserts=original.__name__ == "insertInto")
            except Exception:  # noqa: BLE001 - unknown: never taken as a target holding just these rows
                info["mode"] = "append"
        cap.record(self._df, plan=plan, observed=observed, **info)
        return result

    wrapper.__spark_causal_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _describe_v1(method: str) -> Callable[..., dict]:
    def describe(writer: Any, *args: Any, **kwargs: Any) -> dict:
        first = args[0] if args else kwargs.get("path", kwargs.get("tableName", kwargs.get("table")))
        if method in ("saveAsTable", "insertInto"):
            table = str(first).split(".")[-1].strip("`") if first else None
            return {"name": table, "table": table, "fmt": kwargs.get("format")}
        if method == "jdbc":
            table = args[1] if len(args) > 1 else kwargs.get("table")
            return {"name": str(table).split(".")[-1], "table": table, "fmt": "jdbc"}
        path = first if isinstance(first, str) else None
        fmt = method if method != "save" else kwargs.get("format")
        return {"name": None, "path": path, "fmt": fmt}
    return describe


def _describe_v2(method: str) -> Callable[..., dict]:
    def describe(writer: Any, *args: Any, **kwargs: Any) -> dict:
        table = getattr(writer, "_spark_causal_table", None)
        name = table.split(".")[-1].strip("`") if table else None
        return {"name": name, "table": table, "fmt": "v2", "mode": method}
    return describe


def _hooked_sql(original: Callable) -> Callable:
    """``spark.sql``: statements that write (INSERT, CTAS, REPLACE ... AS SELECT) are outputs.

    A write statement is analysed first, without running, so that it can write its query with probes
    (``Capture.observe_sql``), as a ``DataFrameWriter`` does; if that cannot be set up, the statement
    runs as given and is measured afterwards by an extra pass.
    """

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        cap = _current()
        if cap is None or getattr(_state, "inside", False):
            return original(self, *args, **kwargs)
        prepared = cap.observe_sql(self, *args, **kwargs)
        if prepared is not None:
            command, query, table, path, observed = prepared
            _state.inside = True
            try:
                df = P.to_dataframe(self, command)  # runs the write, as spark.sql would
            finally:
                _state.inside = False
            cap.record(df, name=_output_name(table, path), table=table, path=path, fmt="sql", plan=query,
                       observed=observed, mode=P.write_mode(command))
            return df
        df = original(self, *args, **kwargs)
        try:
            command = P.analyzed(df)
            write = P.unwrap_write(command)
            mode = P.write_mode(command) if write is not None else None
        except Exception as exc:  # noqa: BLE001
            cap._fail_soft(f"could not read the plan of a SQL statement: {_one_line(exc)}", exc)
            return df
        if write is not None:
            query, table, path = write
            cap.record(df, name=_output_name(table, path), table=table, path=path, fmt="sql", plan=query,
                       mode=mode)
        return df

    wrapper.__spark_causal_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _patches() -> list[tuple[type, str, Callable[[Callable], Callable]]]:
    from pyspark.sql import SparkSession
    from pyspark.sql.classic.dataframe import DataFrame as ClassicFrame
    from pyspark.sql.readwriter import DataFrameWriter, DataFrameWriterV2

    out: list[tuple[type, str, Callable[[Callable], Callable]]] = []
    for m in _V1_METHODS:
        out.append((DataFrameWriter, m, lambda f, m=m: _hooked(f, _describe_v1(m), inline=True)))
    for m in _V2_METHODS:
        out.append((DataFrameWriterV2, m, lambda f, m=m: _hooked(f, _describe_v2(m))))
    out.append((SparkSession, "sql", _hooked_sql))
    out.append((DataFrameWriterV2, "__init__", _remember_table))
    out += [(ClassicFrame, m, _persisted_instead) for m in ("checkpoint", "localCheckpoint")]
    return out


def _persisted_instead(original: Callable) -> Callable:
    """Under capture, ``checkpoint()``/``localCheckpoint()`` persist the frame instead of cutting its plan.

    Why: a checkpoint's plan is a scan of the saved RDD, so every output read from it would have that
    RDD as its only source (a drift upstream named ``daily_input1.net``), and no sampled pass could
    reach the driving table's rows. A persisted frame computes the same rows once and keeps its
    analysed plan, which lineage, probes and samples read as for ``cache()``."""

    @functools.wraps(original)
    def wrapper(self: Any, eager: bool = True, *args: Any, **kwargs: Any) -> Any:
        if _current() is None:
            return original(self, eager, *args, **kwargs)
        level = kwargs.get("storageLevel", args[0] if args else None)
        return self.persist() if level is None else self.persist(level)

    wrapper.__spark_causal_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _remember_table(original: Callable) -> Callable:
    """The V2 writer keeps its table name only on the JVM side; remember it for naming the output."""

    @functools.wraps(original)
    def wrapper(self: Any, df: Any, table: str, *args: Any, **kwargs: Any) -> None:
        original(self, df, table, *args, **kwargs)
        self._spark_causal_table = table

    wrapper.__spark_causal_original__ = original  # type: ignore[attr-defined]
    return wrapper


def _install() -> None:
    for klass, attr, wrap in _patches():
        current = getattr(klass, attr)
        if not hasattr(current, "__spark_causal_original__"):
            setattr(klass, attr, wrap(current))


def _uninstall() -> None:
    for klass, attr, _ in _patches():
        current = getattr(klass, attr)
        original = getattr(current, "__spark_causal_original__", None)
        if original is not None:
            setattr(klass, attr, original)


# ---------------------------------------------------------------------------------------- public
@contextlib.contextmanager
def capture(spark: Any = None, *, store: str, run: str, replace: bool = False, sample_size: int = 20_000,
            seed: int = 0, samples: bool = True, strict: bool = False,
            script: str | None = None, args: list[str] | None = None) -> Iterator[Capture]:
    """Capture every output written inside the block as run ``run`` of ``store``.

    >>> with spark_causal.capture(spark, store="/tmp/causal-store", run="2026-11-24") as cap:  # doctest: +SKIP
    ...     report.write.parquet("/data/out/report")
    >>> cap.graph.nodes["report.revenue"]["kind"]  # doctest: +SKIP
    'aggregate'

    If the block raises, the run is still committed with status ``failed`` (whatever was captured
    is kept) and the exception passes through unchanged.
    """
    if spark is not None:
        P.jvm_session(spark)  # Spark Connect: refuse before the job runs
    if sample_size < 0:
        raise CaptureError(f"sample size must be 0 or more, got {sample_size}", hint="use e.g. --sample-size 20000")
    cap = Capture(store=store_root(store), run=run, replace=replace, script=script, args=list(args or []),
                  options=CaptureOptions(sample_size=sample_size, seed=seed, samples=samples, strict=strict),
                  spark=spark)
    if not _is_uri(cap.store) or spark is not None:  # refuse an existing run before the job runs
        from .store import Store

        cap._writer = Store(cap.store, spark=spark).begin(run, replace=replace)
    with _lock:
        _active.append(cap)
        _install()
    status, error = "succeeded", None
    try:
        yield cap
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, error = "failed", f"SystemExit({exc.code})"
        raise
    except BaseException as exc:
        status, error = "failed", _one_line(exc)
        raise
    finally:
        with _lock:
            _active.remove(cap)
            if not _active:
                _uninstall()
        try:
            cap.commit(status=status, error=error)
        except Exception as exc:  # noqa: BLE001 - the job's own outcome (or exception) stands
            if cap.options.strict and status == "succeeded":
                raise
            log.error("spark-causal: could not store run %s: %s", run, _one_line(exc))


def register_output(df: Any, name: str) -> None:
    """Register a DataFrame as an output of the running capture, for jobs that collect instead of write.

    Outside a capture this does nothing, so a job can call it unconditionally.
    """
    from pyspark.sql import DataFrame

    cap = _current()
    if cap is None:
        return
    if not isinstance(df, DataFrame):  # ``df.toPandas()`` passed by mistake: said, the job goes on
        what = f"{type(df).__module__}.{type(df).__name__}"
        cap._fail_soft(f"register_output({name!r}) needs a Spark DataFrame, got {what}: the output is not captured",
                       TypeError(what))
        return
    cap.record(df, name=name)


def run_script(script: str, args: list[str], *, store: str, run: str, replace: bool = False,
               sample_size: int = 20_000, seed: int = 0, samples: bool = True, strict: bool = False) -> int:
    """Run an unmodified PySpark script as ``__main__`` under capture; returns its exit code.

    The script's exception and exit code pass through; ``spark.stop()`` inside the script is
    deferred until the run is stored, because storing may need the session.
    """
    from pyspark.sql import SparkSession

    if not os.path.isfile(script):
        raise CaptureError(f"no such script: {script}", hint="give the path of a PySpark .py file after --")
    real_stop = SparkSession.stop
    stopped: list[Any] = []
    existing = SparkSession.getActiveSession()  # a caller's session (notebook, tests) outlives the script
    SparkSession.stop = lambda self: stopped.append(self)  # type: ignore[method-assign]
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    code = 0
    try:
        with capture(None, store=store, run=run, replace=replace, sample_size=sample_size, seed=seed,
                     samples=samples, strict=strict, script=os.path.abspath(script), args=args):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except SparkCausalError:
        raise
    except BaseException:  # noqa: BLE001 - the job's own failure: print it as Python would
        traceback.print_exc()
        code = 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        SparkSession.stop = real_stop  # type: ignore[method-assign]
        for session in stopped:
            if session is not existing:
                session.stop()
    return code


# ---------------------------------------------------------------------------------------- helpers
def _leaves(plan: Any) -> list[tuple[Any, dict[int, int]]]:
    """Source leaves of a plan (each once), subquery plans included, each with how many Unions above it
    output each of its exprIds (``lineage.WalkResult.node``)."""
    out, seen, stack = [], set(), [(plan, {})]
    while stack:
        p, unions = stack.pop()
        if P.cls(p) in P.LEAF_CLASSES:
            h = int(p.hashCode())
            if h not in seen:
                seen.add(h)
                out.append((p, unions))
            continue
        for k, ch in enumerate(P.children(p)):
            stack.append((ch, {**unions, **{e: unions.get(e, 0) + 1 for e in P.reused_ids(p, k)}}))
        for e in P.expressions(p):
            stack.extend((sub, unions) for sub in P.inspect_expr(e).subqueries)
    return out


def _leaf_nodes(walk: Any, leaf: Any, unions: dict[int, int], only: set[int] | None = None) -> dict[str, str]:
    """{column of a source leaf: its node} (``_leaves`` gives the unions above it), for the columns in
    ``only`` (exprIds) when given."""
    return {P.name(a): nid for a in P.output(leaf) if (only is None or P.expr_id(a) in only)
            and (nid := walk.node(P.expr_id(a), unions.get(P.expr_id(a), 0)))}


def _replaces(fmt: str | None, mode: str | None) -> bool:
    """Whether a write of this mode leaves its target holding exactly the rows written."""
    return mode in (("create", "replace", "createOrReplace") if fmt == "v2" else
                    (None, "overwrite", "error", "errorifexists"))


def _read_back(spark: Any, *, path: str | None, table: str | None, fmt: str | None) -> Any:
    """The written output, read back (cheaper than recomputing it); None when it cannot be read."""
    try:
        if table:
            return spark.table(table)
        if path and fmt in ("parquet", "orc", "json"):
            return spark.read.format(fmt).load(path)
    except Exception:  # noqa: BLE001 - fall back to recomputing the plan
        return None
    return None


def _local_parquet(path: str | None) -> Any:
    """A small Parquet output in a local folder, read by pyarrow as ``sampling._to_pandas`` would give it
    (0.01 s against ~0.15 s for a Spark job); None where only Spark reads it the same way: another
    filesystem, partition folders, timestamps (Spark shows them in its session's time zone), nested or
    binary columns."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    folder = path[len("file:"):] if path and path.startswith("file:") else path
    if not folder or _is_uri(folder) or not os.path.isdir(folder) or \
            any(e.is_dir() and not e.name.startswith((".", "_")) for e in os.scandir(folder)):
        return None
    try:
        table = ds.dataset(folder, format="parquet").to_table()
    except Exception:  # noqa: BLE001 - a codec pyarrow lacks (LZO), a file it cannot read: Spark reads it
        return None
    plain = (pa.types.is_integer, pa.types.is_floating, pa.types.is_string, pa.types.is_large_string,
             pa.types.is_boolean, pa.types.is_date32, pa.types.is_decimal)
    if not table.num_columns or not all(any(t(f.type) for t in plain) for f in table.schema):
        return None
    frame = table.to_pandas()
    for f in table.schema:
        if pa.types.is_decimal(f.type):
            frame[f.name] = frame[f.name].astype("float64")
    return frame


def _output_name(table: str | None, path: str | None) -> str | None:
    if table:
        return str(table).split(".")[-1].strip("`")
    if path:
        return P.path_table_name(str(path))
    return None


def _is_uri(path: str) -> bool:
    return "://" in path or path.startswith("dbfs:")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException) -> str:
    """The exception as one line; for a py4j error, the Java exception's own message, not py4j's
    "An error occurred while calling o196.exprId"."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return f"{java.getClass().getSimpleName()}: {str(java.getMessage()).strip().splitlines()[0]}"[:500]
        except Exception:  # noqa: BLE001 - the JVM is gone: py4j's own text below
            pass
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return f"{type(exc).__name__}: {first}"[:500]
