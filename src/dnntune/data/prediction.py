"""What a model's predictions are, in the user's terms (shared by PyTorch and onnxruntime models)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prediction:
    """What :meth:`Preprocessing.outputs_to_predictions` (and ``LoadedRun.predict``) returns.

    Attributes:
        outputs: the model's outputs, (N, num_outputs) float32: logits for classification, values in the
            target's own units for regression (the target scaling undone).
        indices: classification: the predicted class index per sample, (N,) int64.
        labels: classification: the predicted class name per sample (the index as text when the dataset
            has no class names); multi-label: per sample the list of the names of the labels decided present.
        probabilities: classification: the softmax of the outputs, (N, num_classes) float32; multi-label:
            the sigmoid of each label's output, (N, K) float32.
        decisions: multi-label: 0/1 per sample and label (probability ≥ the run's threshold of the label),
            (N, K) int64.
        values: regression: the predicted values in the target's shape, (N,) for one target, else (N, K).
    """

    outputs: np.ndarray
    indices: np.ndarray | None = None
    labels: list[str] | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None
    decisions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.outputs)
