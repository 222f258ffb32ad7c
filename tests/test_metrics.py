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


def test_multi_output_r2_is_the_mean_of_per_output_r2_as_scikit_learn():
    # two outputs on very different scales: pooling the sums of squares over outputs (the old
    # definition) lets the large-variance output dominate, scikit-learn averages the per-output R²
    rng = np.random.default_rng(1)
    y = np.stack([rng.normal(scale=10.0, size=40), rng.normal(scale=0.1, size=40)], axis=1)
    out = y + np.stack([rng.normal(scale=1.0, size=40), rng.normal(scale=0.1, size=40)], axis=1)
    expected = skm.r2_score(y, out, multioutput="uniform_average")
    pooled = 1 - ((out - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert abs(pooled - expected) > 0.3  # the case tells the two definitions apart
    m = compute_metrics("regression", torch.tensor(out), torch.tensor(y), 2)
    assert m["r2"] == pytest.approx(expected)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, out))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, out))


@pytest.mark.parametrize("perfect", [True, False])
def test_r2_of_a_constant_target_column_follows_scikit_learn(perfect):
    # scikit-learn (force_finite=True): a constant column scores 1.0 if predicted exactly, else 0.0
    rng = np.random.default_rng(2)
    y = np.stack([np.full(20, 3.0), rng.normal(size=20)], axis=1)
    out = y + np.stack([np.zeros(20) if perfect else np.full(20, 0.5), rng.normal(scale=0.3, size=20)], axis=1)
    m = compute_metrics("regression", torch.tensor(out), torch.tensor(y), 2)
    assert m["r2"] == pytest.approx(skm.r2_score(y, out))
    m1 = compute_metrics("regression", torch.tensor(out[:, :1]), torch.tensor(y[:, 0]), 1)
    assert m1["r2"] == pytest.approx(skm.r2_score(y[:, 0], out[:, 0]))
    assert m1["r2"] == (1.0 if perfect else 0.0)
