"""User-facing errors: one line that names the file, node or op, and a non-zero exit."""
from __future__ import annotations


class QCompileError(Exception):
    """A mistake in what the user gave us (file, graph, data, option), not a bug in qcompiler.

    The CLI prints `qcompile: error: <message>` and exits with `exit_code`; no traceback.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


class UnsupportedModelError(QCompileError):
    """The graph uses ops or attributes that qcompiler cannot import."""


class CalibrationDataError(QCompileError):
    """Calibration data is missing, of the wrong shape or dtype, or not finite."""


class TargetError(QCompileError):
    """The target is unknown or cannot be built on this machine."""
