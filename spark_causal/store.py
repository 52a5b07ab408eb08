"""The run store: ``<root>/runs/<run>/`` with meta.json, graph.json, stats and samples.

Why it looks like this (DESIGN section 8, layout in docs/internals.md):

- A run is written under ``runs/.tmp-<run>-<uuid>/`` and made visible by one rename plus a
  ``_SUCCESS`` marker written last, so a crash leaves no half run and two writers of different runs
  never touch the same folder. Readers only ever see folders that carry ``_SUCCESS``.
- The root is a local folder (the default, plain ``os``) or any Hadoop URI Spark can write
  (``hdfs://``, ``s3a://``, ``dbfs:/``, ``abfss://``, ``file:/``). Both sit behind one tiny
  filesystem interface, so the store logic exists once.
- Everything is bytes at the interface (JSON text, Parquet written to memory by pyarrow): the
  files are small (the graph, one row per node, a bounded sample), so no streaming is needed.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from spark_causal.errors import RunExistsError, StoreError, UnknownRunError, UnsupportedSessionError
from spark_causal.lineage import drop_cycles

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd
    from pyspark.sql import SparkSession

SCHEMA_VERSION = 1
"""Version of the persisted layout; bump it when a reader of the old layout would misread the new."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SAFE_PART = re.compile(r"[A-Za-z0-9._=@+-]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: "C:" is a Windows drive
_SUCCESS = "_SUCCESS"
_META = "meta.json"
_GRAPH = "graph.json"
_HINT_RUNS = 5


# ---------------------------------------------------------------- JSON, shared with render


def dump_json(obj: Any) -> str:
    """Serialise ``obj`` as strict JSON (NaN/inf become null, numpy and dates become plain values).

    Every JSON file the store writes and every JSON the CLI prints goes through here, so a NaN
    statistic or a numpy scalar in a graph attribute can never produce invalid JSON.
    """
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return _jsonable(float(obj))
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return _jsonable(obj.tolist())
    return str(obj)


# ---------------------------------------------------------------- filesystems


class _FileSystem(Protocol):
    """The few operations the store needs; paths are plain strings under the store root."""

    def join(self, base: str, *parts: str) -> str: ...
    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def mkdirs(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def rename(self, src: str, dst: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def read_bytes(self, path: str) -> bytes: ...
    def write_bytes(self, path: str, data: bytes) -> None: ...


class _LocalFileSystem:
    """A local folder, through ``os``; ``os.rename`` of a folder is atomic on POSIX."""

    def join(self, base: str, *parts: str) -> str:
        return os.path.join(base, *parts)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path)) if os.path.isdir(path) else []

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def delete(self, path: str) -> None:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


class _HadoopFileSystem:
    """Any Hadoop URI, through Spark's JVM: the same code reaches HDFS, S3, DBFS and UC volumes.

    Every py4j call of the store lives in this class. Bytes cross py4j as ``byte[]``, which is
    fine for the store's small files.
    """

    def __init__(self, spark: SparkSession, root: str) -> None:
        jvm = getattr(spark, "_jvm", None)
        if jvm is None:
            raise UnsupportedSessionError(
                f"cannot open store {root!r}: this Spark session has no JVM (Spark Connect?)",
                hint="use a local folder (or a /dbfs/ or /Volumes/ FUSE path) as the store, "
                "or a classic Spark session",
            )
        self._jvm = jvm
        try:
            self._fs = jvm.org.apache.hadoop.fs.Path(root).getFileSystem(spark._jsc.hadoopConfiguration())
        except Exception as e:  # noqa: BLE001 - py4j's error: its Java message's first line is the reason
            reason = str(getattr(e, "java_exception", e)).splitlines()[0][:200]
            scheme = root.split(":", 1)[0]
            raise StoreError(f"cannot open store {root!r}: {reason}",
                             hint=f"Spark has no filesystem for {scheme}:// here; add its connector to the "
                                  f"session (e.g. spark.jars.packages=org.apache.hadoop:hadoop-aws for s3a), "
                                  f"or use a local folder") from None

    def _path(self, path: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def join(self, base: str, *parts: str) -> str:
        return "/".join([base.rstrip("/"), *parts])

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def is_dir(self, path: str) -> bool:
        return bool(self._fs.getFileStatus(self._path(path)).isDirectory())

    def mkdirs(self, path: str) -> None:
        self._fs.mkdirs(self._path(path))

    def listdir(self, path: str) -> list[str]:
        if not self._fs.exists(self._path(path)):
            return []
        return sorted(status.getPath().getName() for status in self._fs.listStatus(self._path(path)))

    def rename(self, src: str, dst: str) -> None:
        if not self._fs.rename(self._path(src), self._path(dst)):
            raise StoreError(f"could not rename {src} to {dst}", hint="check write permissions on the store")

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def read_bytes(self, path: str) -> bytes:
        if not self.exists(path):
            raise FileNotFoundError(path)
        buffer = self._jvm.java.io.ByteArrayOutputStream()
        self._jvm.org.apache.hadoop.io.IOUtils.copyBytes(self._fs.open(self._path(path)), buffer, 65536, True)
        return bytes(buffer.toByteArray())

    def write_bytes(self, path: str, data: bytes) -> None:
        stream = self._fs.create(self._path(path), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()


def store_root(root: Any) -> str:
    """A store's root as the store holds it: a local folder made absolute, since a job that changes its
    working directory (``os.chdir`` to its own folder, a common first line) must commit where its run
    was begun; a URI as given."""
    return str(root) if _URI.match(str(root)) else os.path.abspath(str(root))


def _filesystem(root: str, spark: SparkSession | None) -> _FileSystem:
    if not _URI.match(root):
        return _LocalFileSystem()
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    return _HadoopFileSystem(spark, root)


# ---------------------------------------------------------------- names


def _check_run_id(run: str) -> str:
    """A run id becomes a folder name on every filesystem the store supports, so keep it plain."""
    if not isinstance(run, str) or not _SAFE_NAME.fullmatch(run) or run.startswith(".") or len(run) > 200:
        raise StoreError(
            f"invalid run id {run!r}",
            hint="use at most 200 letters, digits, '.', '_' and '-', not starting with '.' (e.g. 2026-11-24)",
        )
    return run


def file_name(name: str) -> str:
    """A file name of a run for an output or segment id, which may hold any character a table name or a
    folder can (``daily report.seg1``, ``umsätze``): kept as it is when plain, so earlier runs' files
    are found under the same names; else its other characters as ``-`` and a hash of the whole id,
    so two ids never share a file."""
    if _SAFE_PART.fullmatch(name) and name not in (".", ".."):
        return name
    plain = re.sub(r"[^A-Za-z0-9._=@-]+", "-", name)[:120]
    return f"{plain}+{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _check_file_name(name: str) -> list[str]:
    parts = name.split("/")
    if not all(_SAFE_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise StoreError(
            f"invalid file name {name!r} in a run",
            hint="use relative names of letters, digits and '._=@+-', with '/' for a subfolder",
        )
    return parts


def _visible(names: list[str]) -> list[str]:
    """Files of a run as users know them: without the marker and hidden files (Hadoop's .crc)."""
    return [n for n in names if n != _SUCCESS and not n.startswith(".")]


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- writing


class RunWriter:
    """Writes one run into a private temporary folder; nothing is visible before :meth:`commit`.

    Made by :meth:`Store.begin`. Usable as a context manager: leaving the block without a commit
    aborts the run.
    """

    def __init__(self, store: Store, run: str, *, replace: bool, tmp: str) -> None:
        self.store = store
        self.run = run
        self.replace = replace
        self._tmp = tmp
        self._done = False

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as strict JSON to ``name`` (which may contain a subfolder)."""
        self._write(name, dump_json(obj).encode("utf-8"))

    def write_parquet(self, name: str, df: pd.DataFrame) -> None:
        """Write a pandas frame as Parquet to ``name`` (e.g. ``samples/orders.seg0.parquet``)."""
        self._write(name, _parquet_bytes(df))

    def commit(self, meta: dict[str, Any]) -> None:
        """Write ``meta.json``, rename the run into place and write ``_SUCCESS`` last.

        Replacing moves the old run aside (to a hidden ``.old-`` folder) first and deletes it only
        once the new one is in place: a crash in between never shows a half run under the id.
        """
        fs, runs_dir = self.store._fs, self.store._runs_dir
        record = {"schema_version": SCHEMA_VERSION, "run": self.run}
        record.update({k: v for k, v in meta.items() if k not in record})
        self.write_json(_META, record)
        target = fs.join(runs_dir, self.run)
        if not self.replace and fs.exists(fs.join(target, _SUCCESS)):
            raise self.store._exists_error(self.run)  # another writer committed meanwhile
        aside = fs.join(runs_dir, f".old-{self.run}-{uuid.uuid4().hex}")
        had_old = fs.exists(target)  # a committed run, or the leftover of a crashed commit
        if had_old:
            fs.rename(target, aside)
        try:
            fs.rename(self._tmp, target)
        except Exception:
            if had_old:
                fs.rename(aside, target)  # put the previous run back before failing
            raise
        fs.write_bytes(fs.join(target, _SUCCESS), b"")
        self._done = True
        if had_old:
            fs.delete(aside)

    def abort(self) -> None:
        """Delete everything written so far; the store looks as if the writer never started."""
        if not self._done:
            self.store._fs.delete(self._tmp)
            self._done = True

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def _write(self, name: str, data: bytes) -> None:
        if self._done:
            raise StoreError(
                f"run {self.run!r} is already committed or aborted",
                hint="start a new writer with store.begin(run)",
            )
        fs = self.store._fs
        fs.write_bytes(fs.join(self._tmp, *_check_file_name(name)), data)


# ---------------------------------------------------------------- the store


class Store:
    """A folder of runs, local or on any Hadoop filesystem.

    >>> store = Store("/tmp/causal-store")                          # doctest: +SKIP
    >>> with store.begin("2026-11-24") as w:                        # doctest: +SKIP
    ...     w.write_json("graph.json", graph_json)
    ...     w.commit({"status": "succeeded"})
    >>> [m["run"] for m in store.runs()]                            # doctest: +SKIP
    ['2026-11-24']
    """

    def __init__(self, root: str, *, spark: SparkSession | None = None) -> None:
        self.root = store_root(root)
        self._fs: _FileSystem = _filesystem(self.root, spark)
        self._runs_dir = self._fs.join(self.root, "runs")

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # writing

    def begin(self, run: str, *, replace: bool = False) -> RunWriter:
        """Start writing ``run``; refused when the run exists, unless ``replace``.

        The check is repeated at commit, so two concurrent writers of one id cannot both win.
        """
        _check_run_id(run)
        if not replace and self._is_committed(run):
            raise self._exists_error(run)
        tmp = self._fs.join(self._runs_dir, f".tmp-{run}-{uuid.uuid4().hex}")
        self._fs.mkdirs(tmp)
        return RunWriter(self, run, replace=replace, tmp=tmp)

    # reading

    def runs(self) -> list[dict[str, Any]]:
        """The meta of every committed run, oldest first (by ``started``, then id). A run whose meta
        cannot be read is listed with status ``damaged`` and the reason, so one broken folder does
        not hide the others."""
        metas = []
        for run in self._run_ids():
            try:
                metas.append(self.meta(run))
            except StoreError as e:
                metas.append({"run": run, "status": "damaged", "error": e.message})
        return sorted(metas, key=lambda m: (str(m.get("started") or ""), m["run"]))

    def meta(self, run: str) -> dict[str, Any]:
        """The run's ``meta.json``; refuses runs written by a newer spark-causal."""
        try:
            meta = json.loads(self._read(run, _META))
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except ValueError:
            raise StoreError(f"run {run!r} in {self.root} has a damaged meta.json",
                             hint="capture the run again with --replace, or delete its folder") from None
        version = meta.get("schema_version")
        if not isinstance(version, int) or version < 1:
            raise StoreError(
                f"run {run!r} in {self.root} has no valid schema_version in its meta.json",
                hint="this folder was not written by spark-causal; capture the run again",
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run {run!r} in {self.root} was written by a newer spark-causal "
                f"(store schema {version}, this version reads up to {SCHEMA_VERSION})",
                hint="upgrade spark-causal: pip install -U spark-causal",
            )
        return meta

    def graph(self, run: str) -> nx.DiGraph:
        """The run's column DAG (node-link JSON with ``edges="edges"``)."""
        import networkx as nx

        self.meta(run)
        try:
            graph = nx.node_link_graph(json.loads(self._read(run, _GRAPH)), edges="edges")
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # truncated, or not node-link JSON
            raise StoreError(f"run {run!r}: {_GRAPH} is damaged ({type(e).__name__}: {str(e)[:80]})",
                             hint="capture the run again with --replace, or delete its folder") from None
        return drop_cycles(graph)

    def read_parquet(self, run: str, name: str) -> pd.DataFrame:
        """A Parquet file of the run as pandas (e.g. ``stats.parquet``, ``samples/<id>.parquet``)."""
        import pyarrow.parquet as pq

        self.meta(run)
        data = self._read(run, name)
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a truncated or foreign file
            raise StoreError(f"run {run!r}: {name} is damaged ({str(e).splitlines()[0][:120]})",
                             hint="capture the run again with --replace") from None

    def list(self, run: str, subfolder: str = "") -> list[str]:
        """File names in the run's ``subfolder`` (the run folder itself by default), sorted."""
        self.meta(run)
        parts = _check_file_name(subfolder) if subfolder else []
        return _visible(self._fs.listdir(self._fs.join(self._runs_dir, run, *parts)))

    # internals

    def _run_ids(self) -> list[str]:
        if not self._fs.exists(self.root):
            raise StoreError(
                f"store {self.root} does not exist",
                hint="check the --store path, or capture a first run: "
                f"spark-causal capture --store {self.root} --run RUN -- job.py",
            )
        if not self._fs.is_dir(self.root):
            raise StoreError(f"store {self.root} is a file, not a store's folder", hint="check the --store path")
        names = self._fs.listdir(self._runs_dir)
        return [n for n in names if not n.startswith(".") and self._is_committed(n)]

    def _is_committed(self, run: str) -> bool:
        return self._fs.exists(self._fs.join(self._runs_dir, run, _SUCCESS))

    def _read(self, run: str, name: str) -> bytes:
        _check_run_id(run)
        if not self._is_committed(run):
            raise self._unknown_error(run)
        run_dir = self._fs.join(self._runs_dir, run)
        try:
            return self._fs.read_bytes(self._fs.join(run_dir, *_check_file_name(name)))
        except FileNotFoundError:
            held = _visible(self._fs.listdir(run_dir))
            raise StoreError(
                f"run {run!r} has no {name}",
                hint=f"this run holds: {', '.join(held) or 'nothing'}",
            ) from None

    def _unknown_error(self, run: str) -> UnknownRunError:
        if self._fs.exists(self._fs.join(self._runs_dir, run)):
            return UnknownRunError(
                f"run {run!r} in store {self.root} is incomplete (no {_SUCCESS} marker)",
                hint="a capture of it is still writing or was killed; capture it again with --replace")
        known = self._run_ids()
        if not known:
            return UnknownRunError(f"no run {run!r} in store {self.root}", hint="the store holds no runs yet")
        which = f"last {_HINT_RUNS} of {len(known)} " if len(known) > _HINT_RUNS else ""
        return UnknownRunError(
            f"no run {run!r} in store {self.root}",
            hint=f"known runs ({which}by id): {', '.join(known[-_HINT_RUNS:])}; "
            f"list them with: spark-causal runs --store {self.root}",
        )

    def _exists_error(self, run: str) -> RunExistsError:
        return RunExistsError(
            f"run {run!r} already exists in store {self.root}",
            hint="choose another run id, or replace it: replace=True (CLI: --replace)",
        )
