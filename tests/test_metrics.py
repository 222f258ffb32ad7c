import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dnntune.engine.metrics import compute_metrics


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_scikit_learn(seed):
    g = torch.Generator().manual_seed(seed)
    n, k = 60, 5
    logits = torch.randn(n, k, generator=g) * 2
    y = torch.randint(0, k - 1, (n,), generator=g)  # class 4 never true: tests zero-division handling
    m = compute_metrics("classification", logits, y, k, confusion=True)
    pred = logits.argmax(1).numpy()
    yt = y.numpy()
    labels = list(range(k))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(yt, pred))
    with pytest.warns(UserWarning):  # sklearn warns about the absent class, we follow its definition
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(yt, pred))
    for ours, fn in (("precision_macro", skm.precision_score), ("recall_macro", skm.recall_score),
                     ("f1_macro", skm.f1_score)):
        assert m[ours] == pytest.approx(fn(yt, pred, average="macro", labels=labels, zero_division=0)), ours
    prob = torch.softmax(logits.double(), 1).numpy()
    assert m["log_loss"] == pytest.approx(skm.log_loss(yt, prob, labels=labels), rel=1e-6)
    assert m["confusion_matrix"] == skm.confusion_matrix(yt, pred, labels=labels).tolist()


def test_regression_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    out = y + rng.normal(scale=0.5, size=50)
    m = compute_metrics("regression", torch.tensor(out).view(-1, 1), torch.tensor(y), 1)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, out))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, out))
    assert m["r2"] == pytest.approx(skm.r2_score(y, out))
