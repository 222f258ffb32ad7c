"""What every model loaded from a run folder tells from its preprocessing."""

from __future__ import annotations

from ..data.preprocess import Preprocessing


class ModelOfRun:
    """What a model loaded from a run folder tells from its ``preprocessing`` (``LoadedRun``, ``OnnxRun``)."""

    preprocessing: Preprocessing

    @property
    def task(self) -> str:
        """``classification``, ``regression`` or ``multilabel``."""
        return self.preprocessing.task

    @property
    def class_names(self) -> list[str] | None:
        """Classification: the name of each class index; multi-label: of each label (the index as text if the
        dataset has none)."""
        return self.preprocessing.labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample input shape ``predict`` expects (after the batch dimension)."""
        return self.preprocessing.input_shape
