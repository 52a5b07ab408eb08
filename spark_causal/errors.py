"""One exception root, one subclass per concern.

Every message is one readable line that says what went wrong, followed by a ``hint`` that says
what to do; the CLI prints both and exits with code 2, never a py4j stack trace.
"""
from __future__ import annotations


class SparkCausalError(Exception):
    """Root of every error spark-causal raises on purpose."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class StoreError(SparkCausalError):
    """The store cannot be read or written (missing, unreadable, newer schema version)."""


class UnknownRunError(StoreError):
    """A run id that the store does not hold."""


class RunExistsError(StoreError):
    """A run id that the store already holds, written again without ``replace``."""


class UnknownOutputError(SparkCausalError):
    """An output or column name the run's graph does not have."""


class UnsupportedSessionError(SparkCausalError):
    """A session without a JVM (Spark Connect): the analysed plan is out of reach."""


class CaptureError(SparkCausalError):
    """Capture itself failed (raised only in strict mode; otherwise logged)."""
