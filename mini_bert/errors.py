"""The errors a user can fix. Each is a `MiniBertError`; the `minibert` command prints its message (what is wrong
and what to do) and exits with code 2. Any other exception is a bug and keeps its traceback.

They subclass ValueError so that code written against the earlier ValueError-based errors still catches them.
"""

from __future__ import annotations


class MiniBertError(ValueError):
    """A problem the user can fix: the message says what is wrong and how to fix it."""


class ConfigError(MiniBertError):
    """A configuration problem, listing every bad value with its path."""


class DataError(MiniBertError):
    """A dataset or corpus is missing, empty or malformed; the message names the file (and line) and the fix."""


class CheckpointError(MiniBertError):
    """A checkpoint folder is missing, incomplete or does not fit the run."""


class MissingFileError(MiniBertError, FileNotFoundError):
    """A file or folder the user named, or that a checkpoint or dataset needs, does not exist."""


class DownloadError(DataError, OSError):
    """A dataset could not be downloaded; the message names the URL and where to put the file by hand."""


class OutputPathError(MiniBertError, OSError):
    """A path the command must write to is a file where a folder is needed (or the reverse), is not writable, or
    the disk is full; raised before the work starts wherever that can be known."""


class InputError(MiniBertError):
    """Arrays handed to the model that it cannot read: wrong shape, dtype or values (token ids, masks, segments)."""
