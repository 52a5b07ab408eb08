"""spark-causal: why did the metric move?

Capture a PySpark job's column-level causal graph and samples as runs in a store, then attribute the
change of a metric between two runs to the sources and stages that caused it.
"""
from .capture import capture, register_output
from .compare import attribute
from .errors import (CaptureError, RunExistsError, SparkCausalError, StoreError, UnknownOutputError,
                     UnknownRunError, UnsupportedSessionError)
from .lineage import upstream_sources
from .render import plot_graph
from .whatif import WhatIf, what_if

__version__ = "0.1.0"

__all__ = [
    "capture", "register_output", "attribute", "what_if", "WhatIf", "plot_graph", "upstream_sources",
    "__version__",
    "SparkCausalError", "StoreError", "UnknownRunError", "RunExistsError", "UnknownOutputError",
    "UnsupportedSessionError", "CaptureError",
]
