"""Every error the library raises on purpose; the CLI maps them to exit codes.

Each message names the file or the params key at fault and, where there is one, the
command that fixes it. Imports nothing heavy: the CLI imports this before parsing.
"""

from __future__ import annotations


class AutotransferError(RuntimeError):
    """Base of the errors below: a problem with the inputs, not a bug."""


class ConfigError(ValueError):
    """A params file or override that does not fit the schema; the message names the key."""


class StageInputError(AutotransferError):
    """A stage's input file is missing, stale or malformed; the message says which and what to run."""


class WeightsError(AutotransferError):
    """Weights that cannot be found or must not be loaded; the message says which file and why."""


class TrainingError(AutotransferError):
    """Training cannot go on (non-finite loss, missing inputs); nothing final is written."""


class PlanError(AutotransferError):
    """No strategy can be trained on these inputs; the message says why."""


class RegistryError(AutotransferError):
    """The tracking server or registry refused or could not be reached; the message names the URI."""


class OutputError(AutotransferError):
    """An output file cannot be written (a full disk, a read-only folder): the message names it; the
    previous file, if any, is unchanged and no temp file is left."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}; the previous file, if any, is unchanged")
        self.path, self.reason = path, reason


class ImageDecodeError(ValueError):
    """One input is not a decodable image; the message says which one and why."""
