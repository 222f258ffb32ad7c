"""Errors a user can cause: the CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a config field, a file, a name. The message says what is allowed."""


class ConfigError(UserError):
    """A recipe or experiment field is wrong."""


class DataError(UserError):
    """A data file or dataset cannot be used as given."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint and curves are kept."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch
