"""Helpers for the example notebooks: showing results, a scratch folder and the example job's folder.

The notebooks in ``notebooks/`` run on Databricks and on a laptop (Jupyter or plain local Spark). The
few things that differ between those places (how HTML is displayed, where scratch files may live, how
Spark names a DBFS path, where the repository's ``jobs/`` folder is) are decided here once, so that
each notebook keeps to its own story. Nothing in the library depends on this module.
"""
from __future__ import annotations

import builtins
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["example_jobs_folder", "show", "spark_path", "workspace"]

DBFS = "/dbfs"
"""The FUSE mount of DBFS on a Databricks driver: files under it are visible to the executors too."""


def on_databricks() -> bool:
    """Whether this driver has the DBFS mount, i.e. runs on Databricks."""
    return Path(DBFS).is_dir()


def _find_display_html(frame: Any) -> Callable[[str], Any] | None:
    """The notebook's ``displayHTML``, if it has one.

    Databricks defines ``displayHTML`` in the notebook's namespace, not in any module this function
    can import, so it is looked up where a notebook keeps it: the globals of the code that called
    :func:`show` (which also finds one a test harness put into the namespace it runs the cells in),
    then ``__main__``, then the builtins.
    """
    places = [frame.f_globals if frame is not None else {}, vars(sys.modules.get("__main__", builtins)),
              vars(builtins)]
    for namespace in places:
        found = namespace.get("displayHTML")
        if callable(found):
            return found
    return None


def _as_html(obj: Any) -> str:
    """HTML for a matplotlib figure (an inline picture), an HTML string, or anything with ``_repr_html_``."""
    if hasattr(obj, "savefig"):
        from .report import figure_html

        return figure_html(obj, alt="figure", max_px=1400)
    return obj if isinstance(obj, str) else obj._repr_html_()


def show(obj: Any, displayHTML: Callable[[str], Any] | None = None) -> None:
    """Display a result, a figure or an HTML string the way the notebook in use can.

    On Databricks the last expression of a cell is not rendered as HTML, so ``displayHTML`` is needed
    (given, or found in the caller's namespace); in Jupyter IPython's display is used; anywhere else
    (a script, a plain Python prompt) a text summary is printed instead, so the notebooks also run there.
    """
    display_html = displayHTML or _find_display_html(inspect.currentframe().f_back)  # type: ignore[union-attr]
    if display_html is not None:
        display_html(_as_html(obj))
        return
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(_as_html(obj)))
            return
    except ImportError:
        pass
    print(obj.summary() if hasattr(obj, "summary") else "(a table or a picture: shown in a notebook)")


def workspace(prefix: str) -> tuple[Path, str]:
    """A new scratch folder for a notebook's data, outputs and store, and the store's path in it.

    On Databricks the folder is under ``/dbfs/tmp``: the executors read the generated input data and
    write the outputs, so the files must be on DBFS rather than on the driver's local disk. Elsewhere
    it is an ordinary temporary folder. ``prefix`` names the folder (e.g. ``"sc-quickstart-"``).
    """
    parent = None
    if on_databricks():
        parent = os.path.join(DBFS, "tmp")
        os.makedirs(parent, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    return work, str(work / "store")


def spark_path(p: str | os.PathLike[str]) -> str:
    """A local path as Spark must be given it: ``/dbfs/x`` is ``dbfs:/x`` for Spark, others unchanged.

    The notebooks create files through the DBFS mount (plain Python file APIs) but Spark does not
    know the mount; it reads and writes the same files by their ``dbfs:`` URI.
    """
    p = str(p)
    return "dbfs:" + p[len(DBFS):] if p.startswith(DBFS + "/") else p


def example_jobs_folder() -> Path:
    """The repository's ``jobs/`` folder (the example job and its data generator).

    It is not part of the installed package, so it is looked for where a checkout puts it: next to
    the package of an editable install, then above or at the working directory (a notebook runs with
    its own folder, ``notebooks/``, as the working directory; a Databricks Repo likewise).
    """
    candidates = (Path(__file__).resolve().parents[1], Path.cwd().parent, Path.cwd())
    for root in candidates:
        if (root / "jobs" / "example_data.py").exists():
            return root / "jobs"
    raise FileNotFoundError("cannot find the repository's jobs/ folder (looked in "
                            + ", ".join(str(c) for c in candidates)
                            + "): run the notebook from a checkout of spark-causal")
