"""The project's error types for user errors: a wrong argument, data value or file.

They subclass ``ValueError`` (``OSError`` too for output files), so existing ``except ValueError``
code keeps working; the command lines print them as one ``error: ...`` line and exit non-zero,
keeping the traceback for everything else (bugs). This module imports nothing from jigcnn.
"""

from __future__ import annotations


class UserError(ValueError):
    """A user's argument, data or file is wrong; the message names it and what is wrong."""


class BadDataError(UserError):
    """Training or evaluation data that cannot be right: a shape, a label or a non-finite value."""


class CheckpointError(UserError):
    """A checkpoint that cannot be used: corrupt, missing, or refused (it would be overwritten)."""


class OutputPathError(UserError, OSError):
    """An output path (checkpoint folder, result file) that cannot be written."""


__all__ = ["UserError", "BadDataError", "CheckpointError", "OutputPathError"]
