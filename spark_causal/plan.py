"""The only module that touches py4j and Catalyst.

Everything that depends on how a Spark version lays out its plan classes lives here, so that a Spark
upgrade is a change to one file. The rest of spark-causal sees plain Python values: class names,
lists of JVM objects, strings and ints.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import UnsupportedSessionError

if TYPE_CHECKING:  # py4j types stay out of the runtime imports
    from pyspark.sql import DataFrame, SparkSession

JObject = Any  # a py4j JavaObject

# Leaves whose rows come from outside the job: each becomes a source table.
LEAF_CLASSES = {
    "LogicalRelation", "LogicalRDD", "LocalRelation", "HiveTableRelation", "DataSourceV2Relation",
    "DataSourceV2ScanRelation", "Range", "OneRowRelation", "InMemoryRelation", "StreamingRelation",
    "StreamingRelationV2", "ExternalRDD", "LogicalQueryStage",
}
# Commands that write a query's result somewhere: their ``query()`` is the plan we want.
WRITE_COMMANDS = {
    "InsertIntoHadoopFsRelationCommand", "InsertIntoHiveTable", "InsertIntoDataSourceCommand",
    "CreateDataSourceTableAsSelectCommand", "CreateHiveTableAsSelectCommand", "AppendData",
    "OverwriteByExpression", "OverwritePartitionsDynamic", "CreateTableAsSelect", "ReplaceTableAsSelect",
    "InsertIntoDataSourceDirCommand", "InsertIntoHiveDirCommand", "CreateViewCommand",
}
SUBQUERY_CLASSES = {"ScalarSubquery", "Exists", "ListQuery", "LateralSubquery", "FunctionTableSubqueryArgumentExpression"}
UDF_CLASSES = {"PythonUDF", "ScalaUDF", "ScalaUDAF", "PythonUDAF", "PythonUDTF", "JavaUDF", "HiveSimpleUDF",
               "HiveGenericUDF", "HiveUDAFFunction", "HiveGenericUDTF", "ScalaAggregator"}


def jvm_session(spark: "SparkSession") -> JObject:
    """The JVM SparkSession behind a classic session; Spark Connect has none, so it is refused here."""
    jss = getattr(spark, "_jsparkSession", None)
    if jss is None:
        raise UnsupportedSessionError(
            "this is a Spark Connect session: its plans live on the server, out of reach of spark-causal",
            hint="run the job with a classic session (spark-submit, pyspark, or a Databricks "
                 "single-user/no-isolation cluster); the captured store can then be read anywhere")
    return jss


def analyzed(df: "DataFrame") -> JObject:
    """The analysed logical plan of a DataFrame: SQL and DataFrame code meet here in one form."""
    jdf = getattr(df, "_jdf", None)
    if jdf is None:
        jvm_session(df.sparkSession)  # raises the clear Spark Connect error
    return normalize(jdf.queryExecution().analyzed())


def normalize(plan: JObject, max_rounds: int = 20) -> JObject:
    """Inline CTEs, then move WHERE conjuncts into the joins they belong to.

    ``WITH x AS (...)`` analyses to a ``WithCTE`` whose references only resolve inside the whole plan;
    a sub-plan cut out of it for sampling fails with "No CTERelationDef found". Catalyst's ``InlineCTE``
    (always inline) replaces each reference by the CTE's own ``SubqueryAlias``, so stage names survive.
    Then ``PushPredicateThroughJoin``:

    ``FROM a, b, c WHERE a.k = b.k AND ...`` analyses to condition-less joins under one big Filter;
    pushing the conjuncts down gives every join its keys and every table its own filters, the same
    shape as ``a.join(b, "k")`` in the DataFrame API. Without it a join has no keys, and a provenance
    query over it would be a cross product. The rule keeps attributes and exprIds as they are.
    """
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return plan
    optimizer = jvm.org.apache.spark.sql.catalyst.optimizer
    plan = optimizer.InlineCTE(True, False, False).apply(plan)
    rule = getattr(optimizer, "PushPredicateThroughJoin$").__getattr__("MODULE$")
    for _ in range(max_rounds):
        new = rule.apply(plan)
        if new.fastEquals(plan):
            return plan
        plan = new
    return plan


def to_dataframe(spark: "SparkSession", plan: JObject) -> "DataFrame":
    """Materialise any logical plan as a DataFrame (``Dataset.ofRows``) without running it."""
    from pyspark.sql import DataFrame

    jdf = jclass("org.apache.spark.sql.classic.Dataset").ofRows(jvm_session(spark), plan)
    return DataFrame(jdf, spark)


def analyzed_plan(plan: JObject) -> JObject:
    """``plan`` through the analyzer of the active session, marked analysed (later analyses skip it)."""
    from pyspark.sql import SparkSession

    return to_dataframe(SparkSession.getActiveSession(), plan)._jdf.queryExecution().analyzed()


def replace_writer_df(jwriter: JObject, jdf: JObject) -> Callable[[], None]:
    """Make a JVM ``DataFrameWriter`` write ``jdf`` instead of its Dataset; returns the undo.

    The classic writer keeps its Dataset in a private final field ``df`` and reads it only when the
    write method runs, so swapping it (by reflection) lets the job's own write execute another plan
    with the same rows, e.g. the plan with observation probes.
    """
    field = _private_field(jwriter, "df")
    before = field.get(jwriter)
    field.set(jwriter, jdf)
    return lambda: field.set(jwriter, before)


def writer_mode(jwriter: JObject, *, inserts: bool) -> str:
    """How a V1 ``DataFrameWriter`` wrote, read off the JVM writer once it has (``.mode()``, a method's
    ``mode=`` or insertInto's ``overwrite=`` all end there): "overwrite" when its target then holds just
    the rows written, else the mode's name ("append", "ignore", "errorifexists"). ``insertInto`` appends
    unless told to overwrite, and an overwrite of dynamic partitions keeps the partitions it did not
    write, so both are "append" like an INSERT INTO (``write_mode``)."""
    def private(name: str) -> JObject:
        return _private_field(jwriter, name).get(jwriter)

    mode = str(private("curmode")).lower()
    if mode != "overwrite":
        return "append" if inserts else mode
    options = private("extraOptions")
    asked = options.get("partitionOverwriteMode")
    dynamic = str(asked.get() if asked.isDefined() else
                  private("df").sparkSession().conf().get("spark.sql.sources.partitionOverwriteMode")).lower() == "dynamic"
    partitioned = inserts or private("partitioningColumns").isDefined()
    return "append" if dynamic and partitioned else "overwrite"


def _private_field(obj: JObject, name: str) -> JObject:
    """The JVM field ``name`` of ``obj``'s class or of a class it extends (the classic writer keeps its
    Dataset itself, its mode and options in the API class above it), made accessible. Remembered per
    class: finding it asks every field of the classes on the way its name, a round trip each."""
    from pyspark import SparkContext

    key = (str(obj.getClass().getName()), name)
    hit = _fields.get(key)
    if hit is None or hit[0] is not SparkContext._jvm:
        klass = obj.getClass()
        while name not in [f.getName() for f in klass.getDeclaredFields()]:
            klass = klass.getSuperclass()
        field = klass.getDeclaredField(name)
        field.setAccessible(True)
        hit = _fields[key] = (SparkContext._jvm, field)
    return hit[1]


_fields: dict[tuple[str, str], tuple[Any, JObject]] = {}


def cls(obj: JObject) -> str:
    """Simple class name of a JVM object (``Project``, ``Alias`` ...), without Scala's ``$``."""
    return _memo(obj, "cls", lambda: str(obj.getClass().getSimpleName()).rstrip("$"))


def _memo(obj: JObject, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered on the py4j proxy ``obj``: plan nodes and expressions are immutable,
    and the same proxy is asked the same question many times by one walk. Each answer is a py4j round
    trip (~0.1 ms), and a capture asks thousands (~0.5 s on a small plan before this memo)."""
    memo = _answers(obj)
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _answers(obj: JObject) -> dict[str, Any]:
    """The answers ``_memo`` keeps on a proxy (``output`` fills in its attributes' names and ids)."""
    return obj.__dict__.setdefault("_spark_causal", {})


def seq(s: JObject) -> list[JObject]:
    """A Scala collection as a Python list: n + 2 round trips (an iterator takes 2n + 1)."""
    indexed = s.toIndexedSeq()
    return [indexed.apply(i) for i in range(int(indexed.length()))]


def scala_seq(items: list) -> JObject:
    """A Python list of JVM objects as a Scala ``Seq`` (what Catalyst constructors take)."""
    if not items:  # immutable, and Catalyst asks for many (an Alias takes two)
        return jclass("scala.collection.immutable.Nil$").__getattr__("MODULE$")
    lst = jclass("java.util.ArrayList")()
    for x in items:
        lst.add(x)
    return jclass("scala.jdk.javaapi.CollectionConverters").asScala(lst).toSeq()


_classes: dict[str, tuple[Any, JObject]] = {}


def jclass(name: str) -> JObject:
    """The JVM class ``name`` (dotted; a Scala object's class ends in ``$``), resolved once per JVM.

    Resolving ``jvm.a.b.C`` costs a py4j round trip per name part, several times a call on the class
    itself, and rewriting a plan builds hundreds of Catalyst objects: cached, only the calls remain.
    """
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    hit = _classes.get(name)
    if hit is None or hit[0] is not jvm:
        target = jvm
        for part in name.split("."):
            target = getattr(target, part)
        hit = _classes[name] = (jvm, target)
    return hit[1]


def children(node: JObject) -> list[JObject]:
    return list(_memo(node, "children", lambda: seq(node.children())))


def expressions(node: JObject) -> list[JObject]:
    """A plan node's expressions, the same proxies each time: lineage, column pruning and capture all
    walk them, and each walk's questions are then answered once (``_memo``)."""
    return list(_memo(node, "expressions", lambda: seq(node.expressions())))


def option(o: JObject) -> JObject | None:
    return o.get() if o is not None and o.isDefined() else None


def call(obj: JObject, *names: str) -> JObject | None:
    """The first of ``names`` that the object answers without error, else None.

    Catalyst classes differ between Spark versions and between the V1 and V2 write paths; this keeps
    the fall-backs in one place instead of a try/except at every site.
    """
    for name in names:
        try:
            return getattr(obj, name)()
        except Exception:  # noqa: BLE001 - py4j raises a generic error for a missing method
            continue
    return None


# ---------------------------------------------------------------------------------------- attributes
def expr_id(attr: JObject) -> int:
    return _memo(attr, "id", lambda: int(attr.exprId().id()))


def name(named: JObject) -> str:
    return _memo(named, "name", lambda: str(named.name()))


def quoted(column: str) -> str:
    """``column`` as one quoted identifier for ``F.col``/``select``: a name may hold dots, spaces or
    backticks (a backtick is doubled), which unquoted or naively quoted would not resolve."""
    return "`" + column.replace("`", "``") + "`"


def nullable(attr: JObject) -> bool:
    """Whether Catalyst allows the attribute to be NULL (it then tracks it as such through the plan)."""
    return _memo(attr, "nullable", lambda: bool(attr.nullable()))


def dtype(expr: JObject) -> str:
    try:
        return str(expr.dataType().simpleString())
    except Exception:  # noqa: BLE001 - unresolved types only in broken plans
        return "unknown"


def sql(expr: JObject) -> str:
    try:
        return str(expr.sql())
    except Exception:  # noqa: BLE001 - some expressions have no SQL form
        return str(expr.toString())


_SEP = "\x1f"


def output(plan: JObject) -> list[JObject]:
    """The output attributes of a plan node, their names and exprIds known without more round trips.

    An attribute's ``toString`` is ``name#id`` (plus a type suffix such as ``L``), so one ``mkString``
    of the whole output gives every exprId; only a name holding the separator falls back to asking.
    """
    def fetch() -> list[JObject]:
        jout = plan.output()
        attrs = seq(jout)
        texts = str(jout.mkString(_SEP)).split(_SEP) if attrs else []
        if len(texts) == len(attrs):
            for a, text in zip(attrs, texts):
                nm, _, tail = text.rpartition("#")
                digits = re.match(r"\d+", tail)
                if nm and digits:
                    _answers(a).update(id=int(digits.group()), name=nm)
        return attrs

    return list(_memo(plan, "output", fetch))


def fingerprint(*parts: str) -> str:
    """A short stable hash of the code that defines a node."""
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- expressions
class ExprInfo:
    """What lineage needs from one expression tree, gathered in one walk."""

    __slots__ = ("attrs", "subqueries", "classes", "udf_code")

    def __init__(self) -> None:
        self.attrs: list[JObject] = []       # attribute references, outer references included
        self.subqueries: list[JObject] = []  # plans of scalar / IN / EXISTS subqueries
        self.classes: set[str] = set()
        self.udf_code: list[str] = []        # hashes of Python UDF bodies, so a changed body is a code change


def inspect_expr(expr: JObject, info: ExprInfo | None = None) -> ExprInfo:
    info = info or ExprInfo()
    c = cls(expr)
    info.classes.add(c)
    if c == "AttributeReference":
        info.attrs.append(expr)
        return info
    if c in SUBQUERY_CLASSES:
        info.subqueries.append(expr.plan())
    if c == "PythonUDF":
        try:
            command = expr.func().command()  # Spark 4: a Seq[Byte] wrapping the pickled function
            raw = command.unsafeArray() if hasattr(command, "unsafeArray") else command
            info.udf_code.append(hashlib.sha1(bytes(raw)).hexdigest()[:16])
        except Exception:  # noqa: BLE001 - the body is a nicety for fingerprints, not required
            pass
    for ch in children(expr):
        inspect_expr(ch, info)
    return info


def inspect_exprs(exprs: Iterable[JObject]) -> ExprInfo:
    info = ExprInfo()
    for e in exprs:
        inspect_expr(e, info)
    return info


def aggregate_function(expr: JObject) -> str | None:
    """``sum``/``count``/``avg``/``min``/``max``/``other`` for an expression holding one aggregate, else None."""
    found: list[str] = []

    def walk(e: JObject) -> None:
        c = cls(e)
        if c == "AggregateExpression":  # a DISTINCT aggregate is not a sum of per-row contributions
            found.append("Distinct" if e.isDistinct() else cls(e.aggregateFunction()))
            return
        if c in SUBQUERY_CLASSES:
            return
        for ch in children(e):
            walk(ch)

    walk(expr)
    if not found:
        return None
    if len(found) > 1:
        return "sum" if len(linear_sums(expr) or []) > 1 else "other"
    return {"Sum": "sum", "Count": "count", "Average": "avg", "Min": "min", "Max": "max",
            "TrySum": "sum", "TryAverage": "avg", "CountIf": "count"}.get(found[0], "other")


_SAME_VALUE = {"Alias", "Cast", "PromotePrecision", "CheckOverflow", "UnaryPositive", "KnownNotNull"}


def aggregate_argument(expr: JObject) -> JObject | None:
    """The per-row argument of the (first) aggregate in ``expr`` (``usd`` of ``sum(usd)``; None for
    ``count(*)`` or another literal, or no aggregate). Under a ``FILTER (WHERE c)`` clause it is
    ``IF(c, argument, NULL)`` (``IF(c, 1, NULL)`` for a count of rows): sum, avg and count skip NULLs, so
    the filtered aggregate is the plain one of that argument, and a row the clause leaves out
    contributes nothing."""
    stack = [expr]
    while stack and cls(stack[-1]) != "AggregateExpression":
        stack.extend(children(stack.pop()))
    if not stack:
        return None
    agg = stack[-1]
    fn = agg.aggregateFunction()
    kids = children(fn)
    arg = kids[0] if kids and cls(kids[0]) != "Literal" else None
    e = "org.apache.spark.sql.catalyst.expressions."

    def when(cond: JObject, value: JObject | None) -> JObject:
        value = value if value is not None else jclass(e + "Literal$").__getattr__("MODULE$").apply(1)
        return jclass(e + "If")(cond, value, jclass(e + "Literal")(None, value.dataType()))
    if cls(fn) == "CountIf":  # COUNT_IF(c): a count of the rows where c holds
        arg = when(kids[0], None)
    cond = option(agg.filter())
    return arg if cond is None else when(cond, arg)


def affine_terms(expr: JObject, leaf: Callable[[JObject], bool]) -> tuple[list[tuple[float, JObject]], float] | None:
    """``expr`` as a sum of constants times leaves (subexpressions ``leaf`` accepts) plus a constant:
    (the (coefficient, leaf) pairs, the constant), through casts, rounding, ``COALESCE(x, constant)``,
    negation, ``+``/``-`` and ``*``/``/`` by constants; None for any other expression."""
    def walk(e: JObject, coef: float) -> tuple[list[tuple[float, JObject]], float] | None:
        if leaf(e):
            return [(coef, e)], 0.0
        c, kids = cls(e), children(e)
        if (c in _SAME_VALUE or c in ("Round", "BRound")) and kids:
            return walk(kids[0], coef)
        if c == "Coalesce" and len(kids) == 2 and _constant(kids[1]) is not None:
            return walk(kids[0], coef)
        if c == "UnaryMinus" and kids:
            return walk(kids[0], -coef)
        if (k := _constant(e)) is not None:
            return [], coef * k
        if len(kids) != 2:
            return None
        values = [_constant(x) for x in kids]
        if c in ("Add", "Subtract"):
            left, right = walk(kids[0], coef), walk(kids[1], coef if c == "Add" else -coef)
            return None if left is None or right is None else (left[0] + right[0], left[1] + right[1])
        if c == "Multiply" and values.count(None) == 1:
            return walk(kids[values.index(None)], coef * next(v for v in values if v is not None))
        if c == "Divide" and values[0] is None and values[1]:
            return walk(kids[0], coef / values[1])
        return None

    return walk(expr, 1.0)


def _is_aggregate(e: JObject) -> bool:
    return cls(e) == "AggregateExpression"


def outer_affine(expr: JObject) -> tuple[float, float]:
    """(a, b) such that ``expr`` is a x AGG + b for its one aggregate AGG, through casts, rounding,
    ``COALESCE(AGG, constant)`` and constant ``+ - * /`` (``ROUND(SUM(x) / 1000, 1)``: (0.001, 0);
    ``1 - AVG(ok)``: (-1, 1)); (1, 0) for any other expression, which is then taken as the aggregate.

    Why: a sum's units contribute its argument, and an average's exact figures count and sum it; a
    report's ``ROUND(SUM(amount) / 1000, 1) AS revenue_k`` has its exact figures in thousands, so units
    contributing whole amounts made its spread 1,000x too large (every move "no significant change"),
    and ``SUM(x) * 100`` 100x too small (an A/A pair "no mechanism explains it"). The sampled
    units and the average's probe take the argument through the same map (a sum's b is per group, not
    per row: left out)."""
    found = affine_terms(expr, _is_aggregate)
    return (found[0][0][0], found[1]) if found is not None and len(found[0]) == 1 else (1.0, 0.0)


def linear_terms(expr: JObject) -> tuple[list[tuple[float, JObject]], float] | None:
    """``expr`` as constants times columns plus a constant (``rev / 1000``, ``ROUND(rev - cost, 2)``,
    ``a * 100``): (coefficient, attribute) pairs and the constant (``affine_terms``), or None."""
    return affine_terms(expr, lambda e: cls(e) == "AttributeReference")


def linear_sums(expr: JObject) -> list[tuple[float, JObject]] | None:
    """(coefficient, argument) of each SUM in an aggregate expression that is a sum of SUMs times
    constants (``SUM(revenue) - SUM(cost)``, ``ROUND(0.5 * SUM(a) + SUM(b), 2)``); None for any other.
    Such an expression is itself a sum over rows (of ``revenue - cost``), and is attributed as one."""
    found = affine_terms(expr, _is_aggregate)
    if found is None or found[1] or not all(
            not e.isDistinct() and cls(e.aggregateFunction()) in ("Sum", "TrySum") for _, e in found[0]):
        return None
    return [(coef, aggregate_argument(e) or children(e.aggregateFunction())[0]) for coef, e in found[0]]


def ratio_of_sums(expr: JObject) -> tuple[float, JObject, JObject] | None:
    """(scale, numerator, denominator) of an aggregate expression that is one additive aggregate over
    another (``SUM(a - b) / SUM(a)``, ``SUM(CASE ...) / COUNT(*)``, times a constant such as 100, cast
    or rounded): each side a SUM, a COUNT or a sum of SUMs (``linear_sums``), constant factors moved
    into the scale. None for any other. Such a ratio is no sum over rows, but its parts are, and the
    ratio of their totals is attributed through them (``spark_causal.ratio``)."""
    def scaled(e: JObject) -> tuple[float, JObject]:
        k = 1.0
        while True:
            c, kids = cls(e), children(e)
            if c in _SAME_VALUE and kids:
                e = kids[0]
                continue
            values = [_constant(x) for x in kids]
            if c == "Multiply" and len(kids) == 2 and values.count(None) == 1:
                k *= next(v for v in values if v is not None)
                e = kids[values.index(None)]
            elif c in ("Round", "BRound") and kids:
                e = kids[0]
            elif c == "Divide" and len(kids) == 2 and values[0] is None and values[1]:
                k /= values[1]
                e = kids[0]
            else:
                return k, e

    def additive(e: JObject) -> bool:
        if cls(e) == "AggregateExpression":
            return not e.isDistinct() and cls(e.aggregateFunction()) in ("Sum", "TrySum", "Count", "CountIf")
        return len(linear_sums(e) or []) > 1

    scale, e = scaled(expr)
    if cls(e) != "Divide" or len(children(e)) != 2:
        return None
    (kn, num), (kd, den) = (scaled(x) for x in children(e))
    while cls(den) == "NullIf" and children(den):
        kd2, den = scaled(children(den)[0])
        kd *= kd2
    if not (additive(num) and additive(den)) or not kd:
        return None
    return scale * kn / kd, num, den


def _constant(e: JObject) -> float | None:
    """The value of a numeric literal, through casts; None for anything else."""
    while cls(e) in _SAME_VALUE and children(e):
        e = children(e)[0]
    if cls(e) != "Literal":
        return None
    try:
        return float(str(e.value()))
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------- plan facts
def relation_name(leaf: JObject) -> str | None:
    """The table name of a source leaf: its catalog table, else its file path's last meaningful segment."""
    c = cls(leaf)
    if c == "LogicalRelation":
        table = option(leaf.catalogTable())
        if table is not None:
            return str(table.identifier().table())
        paths = call(leaf.relation(), "location")
        if paths is not None:
            roots = seq(paths.rootPaths())
            if roots:
                return path_table_name(str(roots[0].toString()))
        return None
    if c == "HiveTableRelation":
        return str(leaf.tableMeta().identifier().table())
    if c in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        rel = leaf if c == "DataSourceV2Relation" else leaf.relation()
        ident = option(rel.identifier())
        if ident is not None:
            return str(ident.name())
        return str(rel.table().name()).split(".")[-1]
    if c == "Range":
        return "range"
    return None


def columnar_file(leaf: JObject) -> bool:
    """Whether ``leaf`` reads Parquet or ORC files (Delta tables included): a relation that is cheap to
    read again for its statistics, because a re-read decodes only the columns asked for, vectorised."""
    if cls(leaf) != "LogicalRelation":
        return False
    fmt = call(leaf.relation(), "fileFormat")
    name = str(fmt.getClass().getSimpleName()) if fmt is not None else ""
    return "Parquet" in name or "Orc" in name


def reads_from(leaf: JObject, path: str | None, table: str | None) -> bool:
    """Whether the file relation ``leaf`` reads what a write to ``path`` / ``table`` writes (a job that
    appends to its own input): such a source cannot be read again after the write as it was read."""
    if cls(leaf) != "LogicalRelation":
        return False
    catalog = option(leaf.catalogTable())
    if table and catalog is not None and \
            str(catalog.identifier().table()).lower() == str(table).split(".")[-1].strip("`").lower():
        return True
    location = call(leaf.relation(), "location")
    if not path or location is None:
        return False
    want = _local(path)
    roots = [_local(str(r.toString())) for r in seq(location.rootPaths())]
    return any(r == want or r.startswith(want + "/") or want.startswith(r + "/") for r in roots)


def _local(path: str) -> str:
    """A path as comparable text: ``file:`` URIs and relative local paths made absolute."""
    if path.startswith("file:"):
        path = "/" + path[len("file:"):].lstrip("/")
    elif "://" not in path and not path.startswith("dbfs:"):
        path = os.path.abspath(path)
    return path.rstrip("/")


def size_in_bytes(plan: JObject) -> int:
    """Catalyst's size estimate of a plan's output (for a file relation, its files' total size)."""
    return int(str(plan.stats().sizeInBytes()))


def path_table_name(path: str) -> str:
    """``s3://b/warehouse/orders/date=2026-11-24/part.parquet`` -> ``orders``.

    Partition folders (``k=v``) and date- or number-like folders change from run to run, so they are
    skipped: the id of a source must not change when only the day's folder does.
    """

    parts = [p for p in path.rstrip("/").split("/") if p]
    for part in reversed(parts):
        stem = part
        for ext in (".parquet", ".csv", ".json", ".orc", ".avro", ".txt", ".delta", ".gz", ".snappy"):
            if stem.lower().endswith(ext):
                stem = stem[: -len(ext)]
        if "=" in stem or re.fullmatch(r"[0-9_\-T:.]*", stem) or stem.startswith("part-"):
            continue
        return stem
    return parts[-1] if parts else "source"


def write_command_target(cmd: JObject) -> tuple[str | None, str | None]:
    """(table name, path) that a write command writes, from whichever field its class has."""
    table = None
    for getter in ("catalogTable", "table", "tableDesc"):
        t = call(cmd, getter)
        if t is None:
            continue
        if cls(t) in ("Some", "None"):
            t = option(t)
            if t is None:
                continue
        ident = call(t, "identifier")
        if ident is not None and call(ident, "table") is not None:
            table = str(ident.table())
            break
        n = call(t, "name")
        if n is not None:
            table = str(n).split(".")[-1].strip("`")
            break
    path = call(cmd, "outputPath")
    path = str(path.toString()) if path is not None else None
    storage = call(cmd, "storage") if path is None else None  # INSERT OVERWRITE DIRECTORY
    if storage is not None and call(storage, "locationUri") is not None:
        uri = option(storage.locationUri())
        path = str(uri.toString()) if uri is not None else None
    if table is None:
        ident = call(cmd, "name")
        parts = call(ident, "nameParts") if ident is not None else None
        if parts is not None:
            table = str(seq(parts)[-1])
    return table, path


def unwrap_write(plan: JObject) -> tuple[JObject, str | None, str | None] | None:
    """For a write command: (query plan, table, path); None for anything else."""
    if cls(plan) == "CommandResult":
        plan = plan.commandLogicalPlan()
    if cls(plan) not in WRITE_COMMANDS:
        return None
    query = call(plan, "query", "child")
    if query is None:
        return None
    table, path = write_command_target(plan)
    return normalize(query), table, path


def reused_ids(p: JObject, k: int) -> list[int]:
    """ExprIds that operator ``p`` outputs as its ``k``-th child's own: a Union's first child's (Spark's
    Union reuses them), whose nodes below the union differ from the union's (``lineage.WalkResult.node``)."""
    return [expr_id(a) for a in output(p)] if cls(p) == "Union" and k == 0 else []


_REPLACING = {"CreateDataSourceTableAsSelectCommand", "CreateHiveTableAsSelectCommand", "CreateTableAsSelect",
              "ReplaceTableAsSelect", "InsertIntoDataSourceDirCommand", "InsertIntoHiveDirCommand"}


def write_mode(plan: JObject) -> str:
    """"overwrite" when a write command leaves its target holding just the rows it wrote (a table or
    folder created or replaced whole), so that reading the target back reads them, else "append": an
    INSERT INTO adds to rows that were there, an INSERT OVERWRITE of partitions keeps the others."""
    if cls(plan) == "CommandResult":
        plan = plan.commandLogicalPlan()
    c = cls(plan)
    if c == "InsertIntoHadoopFsRelationCommand":
        whole = str(plan.mode()) == "Overwrite" and not seq(plan.partitionColumns())
    else:
        whole = c in _REPLACING
    return "overwrite" if whole else "append"


# What the parser makes of statements that write a query's rows to a table or a folder.
WRITE_STATEMENTS = {"InsertIntoStatement", "CreateTableAsSelect", "ReplaceTableAsSelect", "InsertIntoDir",
                    "UnresolvedWith"}  # WITH ... INSERT; a WITH ... SELECT analyses to no write


def analyze_write_statement(spark: "SparkSession", text: str) -> JObject | None:
    """The analysed plan of one SQL statement that writes, without running it (``spark.sql`` runs a
    command as it analyses it: the write would already have happened); None for other statements,
    which are only parsed (a job's many small queries should not be analysed twice)."""
    parsed = jvm_session(spark).sessionState().sqlParser().parsePlan(text)
    return analyze_only(spark, parsed) if cls(parsed) in WRITE_STATEMENTS else None


def analyze_only(spark: "SparkSession", plan: JObject) -> JObject:
    """``plan`` analysed and checked, not run (a command is not executed)."""
    tracker = jclass("org.apache.spark.sql.catalyst.QueryPlanningTracker")(jclass("scala.Option").empty())
    return jvm_session(spark).sessionState().analyzer().executeAndCheck(plan, tracker)


def with_query(command: JObject, query: JObject) -> JObject:
    """A write command writing ``query`` instead of its own query (same output attributes).

    Some commands hold their query as their child, others (CTAS, INSERT ... DIRECTORY) as a field of a
    leaf; those are copied with the field replaced, found by name among the case class's fields.
    """
    if len(children(command)) == 1:
        return command.withNewChildren(scala_seq([query]))
    names = [str(n) for n in seq(command.productElementNames())]
    args = [command.productElement(i) for i in range(len(names))]
    args[names.index("query")] = query
    return command.copy(*args)


# Nodes a Filter's attributes pass through unchanged on their way down to a relation.
_TRANSPARENT = {"SubqueryAlias", "View", "Project"}


def partition_filters(plan: JObject) -> dict[int, JObject]:
    """The partition predicates of each partitioned file relation (by hashCode) that a Filter applies.

    Why: Spark reads only the partitions a filter on partition columns selects (partition pruning), and
    only when that filter sits right over the relation. Capture puts probes over relations and turns
    filters into 0/1 selection columns; without these predicates kept at the relation, a job reading one
    day of a year-partitioned table would be observed and sampled over the whole year. The partitions
    read are what the run's source *is*, so the predicates stay filters, never selections.
    Only deterministic conjuncts on partition columns alone count; a relation read under different
    partition predicates in two places is left unrestricted.
    """
    found: dict[int, list[JObject]] = {}
    conflict: set[int] = set()
    stack = [plan]
    while stack:
        p = stack.pop()
        stack.extend(children(p))
        if cls(p) != "Filter":
            continue
        leaf = children(p)[0]
        while cls(leaf) in _TRANSPARENT:
            leaf = children(leaf)[0]
        parts = _partition_ids(leaf)
        if not parts:
            continue
        visible = {expr_id(a) for a in output(children(p)[0])}
        keep = []
        for e in conjuncts(p.condition()):
            info = inspect_expr(e)
            ids = {expr_id(a) for a in info.attrs}
            if ids and ids <= parts & visible and not info.subqueries and e.deterministic():
                keep.append(e)
        if not keep:
            continue
        h = int(leaf.hashCode())
        if h in found and [sql(e) for e in found[h]] != [sql(e) for e in keep]:
            conflict.add(h)
        found[h] = keep
    out = {}
    for h, conds in found.items():
        if h in conflict:
            continue
        cond = conds[0]
        for e in conds[1:]:
            cond = jclass("org.apache.spark.sql.catalyst.expressions.And")(cond, e)
        out[h] = cond
    return out


def restrict(leaf: JObject, filters: dict[int, JObject]) -> JObject:
    """``leaf`` under its partition predicates from ``partition_filters``, if it has any."""
    cond = filters.get(int(leaf.hashCode()))
    if cond is None:
        return leaf
    return jclass("org.apache.spark.sql.catalyst.plans.logical.Filter")(cond, leaf)


def _partition_ids(leaf: JObject) -> set[int]:
    """ExprIds of the partition columns of a file relation (or a Hive table), else empty."""
    try:
        if cls(leaf) == "LogicalRelation":
            names = {str(n).lower() for n in leaf.relation().partitionSchema().fieldNames()}
        elif cls(leaf) == "HiveTableRelation":
            names = {name(a).lower() for a in seq(leaf.partitionCols())}
        else:
            return set()
    except Exception:  # noqa: BLE001 - not a file relation we know: no partition columns
        return set()
    return {expr_id(a) for a in output(leaf) if name(a).lower() in names}


def conjuncts(cond: JObject) -> list[JObject]:
    """The parts of a condition joined by AND, left to right."""
    if cls(cond) == "And":
        return conjuncts(cond.left()) + conjuncts(cond.right())
    return [cond]


# Unary operators whose output rows are their input rows: a chain of them is one stage's row set.
ROW_PRESERVING = {"Project", "SubqueryAlias", "View", "Sort", "Repartition", "RepartitionByExpression",
                  "RebalancePartitions", "ResolvedHint", "Window"}
# Operators whose output is their children's attributes (some, filtered, reordered): a child's column is
# needed only if the operator's parents need it. Everything else not projecting reads all child columns.
_PASSING = ROW_PRESERVING - {"Project"} | {"Filter", "Join", "GlobalLimit", "LocalLimit", "Generate",
                                          "Deduplicate", "Offset", "Tail"}
_PROJECTING = {"Project", "Aggregate"}


def needed_ids(root: JObject) -> set[int]:
    """ExprIds of the columns the job needs: written, or read by an operator whose own output is needed.

    Probes measure only those, and the sampled pass carries only those, so neither makes a scan read a
    column the job prunes. Computed top down like Catalyst's column pruning: a Project needs only the
    inputs of its needed outputs. Remembered per plan: capture, probes and sampling all ask.
    """
    return _memo(root, "needed", lambda: _needed(root))


def _needed(root: JObject) -> set[int]:
    used: set[int] = set()
    stack = [(root, {expr_id(a) for a in output(root)})]
    while stack:
        p, needed = stack.pop()
        used |= needed
        c = cls(p)
        if c == "Project":
            exprs = [e for e in seq(p.projectList()) if expr_id(e) in needed]
        else:
            exprs = expressions(p)
        info = inspect_exprs(exprs)
        refs = {expr_id(a) for a in info.attrs}
        stack.extend((sub, {expr_id(a) for a in output(sub)}) for sub in info.subqueries)
        for ch in children(p):
            out = {expr_id(a) for a in output(ch)}
            if c in _PASSING:
                stack.append((ch, out & (needed | refs)))
            elif c in _PROJECTING:
                stack.append((ch, out & refs))
            else:  # Union, Distinct, an opaque operator ...: every input column
                stack.append((ch, out))
    return used
