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


class OutDirUnwritable(UserError):
    """An output folder (``--out``) cannot be created or written; raised before any work is done."""


class CheckpointUnreadable(UserError):
    """A checkpoint cannot be loaded and cannot be moved aside either (the folder is not writable)."""


class CheckpointWriteFailed(UserError):
    """A checkpoint could not be written (a full disk); the checkpoint written before it is kept."""


class RunFolderIncomplete(UserError):
    """A run folder's final files could not all be written (a full disk). Completed work is kept: with a
    checkpoint, running the same command again writes the missing files without retraining."""

    def __init__(self, out_dir, failed: str, reason: str, written: list[str], missing: list[str], checkpoint=None):
        self.out_dir, self.failed, self.reason = out_dir, failed, reason
        self.written, self.missing, self.checkpoint = list(written), list(missing), checkpoint
        if checkpoint is not None:
            then = (f"the trained model is kept in {checkpoint}: free disk space and run the same command again "
                    f"(without --fresh) to finish the folder without retraining")
        else:
            then = ("no checkpoint holds the trained model (train.checkpoint: false): free disk space and run the "
                    "command again, which retrains")
        super().__init__(f"the run folder {out_dir} is incomplete: writing {failed} failed ({reason}); written: "
                         f"{', '.join(self.written) or 'nothing'}; missing: {', '.join(self.missing)}; {then}")
