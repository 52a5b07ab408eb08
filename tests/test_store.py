"""The run store: atomic commit, refusal and replace, schema versions, errors, and the Hadoop backend."""
from __future__ import annotations

import json
import os

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from spark_causal.errors import RunExistsError, StoreError, UnknownRunError
from spark_causal.store import SCHEMA_VERSION, Store


def _graph() -> nx.DiGraph:
    G = nx.DiGraph(outputs={"out": {"columns": ["out.y"]}})
    G.add_node("t.x", kind="source", table="t", column="x", dtype="double")
    G.add_node("out.y", kind="stage", stage="out", column="y", dtype="double", output="out")
    G.add_edge("t.x", "out.y", kind="direct")
    return G


def _write_run(store: Store, run: str, *, started: str = "2026-11-24T00:00:00Z", replace: bool = False,
               value: float = 1.0) -> None:
    w = store.begin(run, replace=replace)
    w.write_json("graph.json", nx.node_link_data(_graph(), edges="edges"))
    w.write_parquet("samples/out.seg0.parquet", pd.DataFrame({"t.x": [value, np.nan], "__weight__": [1.0, 1.0]}))
    w.commit({"started": started, "status": "succeeded", "outputs": ["out"]})


def _hidden_leftovers(root) -> list[str]:
    return [n for n in os.listdir(root / "runs") if n.startswith(".")]


def test_commit_makes_a_readable_run(tmp_path):
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    meta = store.meta("r1")
    assert meta["schema_version"] == SCHEMA_VERSION and meta["run"] == "r1" and meta["status"] == "succeeded"
    assert nx.utils.graphs_equal(store.graph("r1"), _graph())
    samples = store.read_parquet("r1", "samples/out.seg0.parquet")
    assert samples["t.x"].iloc[0] == 1.0 and np.isnan(samples["t.x"].iloc[1])
    assert store.list("r1") == ["graph.json", "meta.json", "samples"]
    assert store.list("r1", "samples") == ["out.seg0.parquet"]
    assert (tmp_path / "runs" / "r1" / "_SUCCESS").exists()
    assert _hidden_leftovers(tmp_path) == []


def test_uncommitted_writer_leaves_no_run(tmp_path):
    store = Store(str(tmp_path))
    w = store.begin("r1")
    w.write_json("graph.json", {"nodes": []})
    assert store.runs() == []  # written, but invisible until commit
    with pytest.raises(UnknownRunError):
        store.meta("r1")
    w.abort()
    assert _hidden_leftovers(tmp_path) == []


def test_context_manager_aborts_when_the_block_fails(tmp_path):
    store = Store(str(tmp_path))
    with pytest.raises(RuntimeError), store.begin("r1") as w:
        w.write_json("graph.json", {"nodes": []})
        raise RuntimeError("job crashed")
    assert store.runs() == [] and _hidden_leftovers(tmp_path) == []


def test_folder_without_success_marker_is_not_a_run(tmp_path):
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    (tmp_path / "runs" / "r1" / "_SUCCESS").unlink()  # as if the commit crashed after its rename
    assert store.runs() == []
    _write_run(store, "r1", value=2.0)  # the leftover does not block the id, and is replaced
    assert store.read_parquet("r1", "samples/out.seg0.parquet")["t.x"].iloc[0] == 2.0
    assert _hidden_leftovers(tmp_path) == []


def test_a_damaged_run_is_named_and_hides_no_other(tmp_path, capsys):
    """A truncated meta.json, a garbage Parquet file, a folder left without its marker: each gives one
    readable error for that run, and the store's other runs list and read as before."""
    from spark_causal.cli import main

    store = Store(str(tmp_path))
    for run in ("good", "bad_meta", "bad_samples", "half"):
        _write_run(store, run)
    (tmp_path / "runs" / "bad_meta" / "meta.json").write_text('{"schema_version": 1, "ru')
    (tmp_path / "runs" / "bad_samples" / "samples" / "out.seg0.parquet").write_bytes(b"not parquet")
    (tmp_path / "runs" / "half" / "_SUCCESS").unlink()
    status = {m["run"]: m["status"] for m in store.runs()}
    assert status == {"good": "succeeded", "bad_meta": "damaged", "bad_samples": "succeeded"}
    with pytest.raises(StoreError, match="damaged meta.json"):
        store.graph("bad_meta")
    with pytest.raises(StoreError, match="out.seg0.parquet is damaged"):
        store.read_parquet("bad_samples", "samples/out.seg0.parquet")
    with pytest.raises(UnknownRunError, match="incomplete"):
        store.meta("half")
    with pytest.raises(StoreError, match="invalid run id"):
        store.meta("r" * 300)
    assert store.read_parquet("good", "samples/out.seg0.parquet")["t.x"].iloc[0] == 1.0
    assert main(["runs", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "damaged meta.json" in out


def test_existing_run_is_refused_unless_replace(tmp_path):
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    with pytest.raises(RunExistsError) as err:
        store.begin("r1")
    assert "--replace" in err.value.hint
    _write_run(store, "r1", replace=True, value=3.0)
    assert store.read_parquet("r1", "samples/out.seg0.parquet")["t.x"].iloc[0] == 3.0
    assert [m["run"] for m in store.runs()] == ["r1"] and _hidden_leftovers(tmp_path) == []


def test_concurrent_writers_of_one_id_cannot_both_commit(tmp_path):
    store = Store(str(tmp_path))
    first, second = store.begin("r1"), store.begin("r1")
    first.write_json("graph.json", {"who": "first"})
    second.write_json("graph.json", {"who": "second"})
    first.commit({"status": "succeeded"})
    with pytest.raises(RunExistsError):
        second.commit({"status": "succeeded"})
    second.abort()
    assert json.loads((tmp_path / "runs" / "r1" / "graph.json").read_text()) == {"who": "first"}
    assert _hidden_leftovers(tmp_path) == []


def test_writers_of_different_runs_interleave(tmp_path):
    store = Store(str(tmp_path))
    a, b = store.begin("a"), store.begin("b")
    a.write_json("graph.json", {"run": "a"})
    b.write_json("graph.json", {"run": "b"})
    b.commit({"started": "2026-11-02"})
    a.commit({"started": "2026-11-01"})
    assert [m["run"] for m in store.runs()] == ["a", "b"]  # sorted by start, not by commit
    with pytest.raises(StoreError, match="already committed"):
        a.write_json("late.json", {})


def test_newer_schema_version_is_refused_with_upgrade_hint(tmp_path):
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    meta_path = tmp_path / "runs" / "r1" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(StoreError, match="newer spark-causal") as err:
        store.graph("r1")
    assert "upgrade" in err.value.hint


def test_unknown_run_hint_lists_known_runs(tmp_path):
    store = Store(str(tmp_path))
    for i in range(7):
        _write_run(store, f"2026-11-{i + 10}")
    with pytest.raises(UnknownRunError) as err:
        store.meta("2026-12-01")
    assert "2026-11-16" in err.value.hint and "last 5 of 7" in err.value.hint
    assert "2026-11-10" not in err.value.hint


def test_missing_store_and_bad_names(tmp_path):
    with pytest.raises(StoreError, match="does not exist") as err:
        Store(str(tmp_path / "nowhere")).runs()
    assert "--store" in err.value.hint
    store = Store(str(tmp_path))
    for bad in ("../x", "a/b", ".hidden", "", "a b"):
        with pytest.raises(StoreError, match="invalid run id"):
            store.begin(bad)
    w = store.begin("ok")
    with pytest.raises(StoreError, match="invalid file name"):
        w.write_json("../escape.json", {})
    w.abort()


def test_missing_file_names_what_the_run_holds(tmp_path):
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    with pytest.raises(StoreError, match=r"has no stats\.parquet") as err:
        store.read_parquet("r1", "stats.parquet")
    assert "graph.json" in err.value.hint


def test_json_is_strict(tmp_path):
    store = Store(str(tmp_path))
    w = store.begin("r1")
    w.write_json("x.json", {"nan": float("nan"), "np": np.float64(2.5), "arr": np.arange(2), 3: {"a"}})
    w.commit({})
    assert json.loads((tmp_path / "runs" / "r1" / "x.json").read_text()) == {
        "nan": None, "np": 2.5, "arr": [0, 1], "3": ["a"]}


def test_hadoop_backend_round_trip(spark, tmp_path):
    uri = f"file://{tmp_path}/store"
    store = Store(uri, spark=spark)
    w = store.begin("r0")
    w.write_json("graph.json", {})
    assert store.runs() == []  # uncommitted: invisible through Hadoop as well
    w.abort()
    _write_run(store, "r1")
    with pytest.raises(RunExistsError):
        store.begin("r1")
    _write_run(store, "r1", replace=True, value=4.0)
    assert [m["run"] for m in store.runs()] == ["r1"]
    assert nx.utils.graphs_equal(store.graph("r1"), _graph())
    assert store.read_parquet("r1", "samples/out.seg0.parquet")["t.x"].iloc[0] == 4.0
    assert store.list("r1", "samples") == ["out.seg0.parquet"]
    # same layout: a local store over the same folder reads what Hadoop wrote
    assert Store(str(tmp_path / "store")).meta("r1")["status"] == "succeeded"
    assert _hidden_leftovers(tmp_path / "store") == []


def test_a_damaged_graph_is_one_line_and_a_folder_store_stays_where_it_was_begun(tmp_path, monkeypatch):
    """A truncated graph.json, or JSON that is no node-link graph, is a StoreError naming the file; a
    store given as a relative folder commits there even after the job changes its working directory."""
    store = Store(str(tmp_path))
    _write_run(store, "r1")
    graph = tmp_path / "runs" / "r1" / "graph.json"
    for damage in (graph.read_text()[:40], "{}", "[1, 2]"):
        graph.write_text(damage)
        with pytest.raises(StoreError, match="graph.json is damaged") as err:
            store.graph("r1")
        assert err.value.hint and "Traceback" not in str(err.value)
    monkeypatch.chdir(tmp_path)
    relative = Store("here")
    w = relative.begin("r2")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # ``os.chdir`` in the job's first line
    w.commit({"status": "succeeded"})
    assert Store(str(tmp_path / "here")).meta("r2")["status"] == "succeeded"
    assert not (tmp_path / "elsewhere" / "here").exists()


def test_a_uri_spark_has_no_filesystem_for_is_one_line(spark):
    with pytest.raises(StoreError, match="cannot open store 's3a://no-such-bucket/causal'") as err:
        Store("s3a://no-such-bucket/causal", spark=spark)
    assert "hadoop-aws" in err.value.hint and "\n" not in str(err.value)
