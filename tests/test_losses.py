import pytest
import torch
import torch.nn.functional as F

from dnntune.config import LossSection
from dnntune.engine.losses import LOSSES, build_loss
from dnntune.errors import ConfigError


def make(name, task="classification", n=4, **knobs):
    return build_loss(LossSection(name=name, knobs=LOSSES.get(name).knobs(**knobs)), task, n)


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_accepts_its_tasks_and_gives_finite_gradients(name):
    torch.manual_seed(0)
    for task in LOSSES.get(name).meta["tasks"]:
        n = 4 if task == "classification" else 1
        out = torch.randn(8, n, requires_grad=True)
        y = torch.randint(0, 4, (8,)) if task == "classification" else torch.randn(8)
        loss = make(name, task, n)(out, y)
        loss.backward()
        assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(out.grad).all()


def test_cross_entropy_label_smoothing_and_soft_targets():
    out, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert make("cross_entropy")(out, y) == pytest.approx(float(F.cross_entropy(out, y)))
    smooth = make("cross_entropy", label_smoothing=0.2)(out, y)
    assert smooth == pytest.approx(float(F.cross_entropy(out, y, label_smoothing=0.2)))
    soft = F.one_hot(y, 4).float()
    assert make("cross_entropy")(out, soft) == pytest.approx(float(F.cross_entropy(out, y)))


def test_kl_div_is_zero_for_matching_distribution():
    target = torch.softmax(torch.randn(8, 4), 1)
    assert make("kl_div")(target.log(), target) == pytest.approx(0.0, abs=1e-6)


def test_auto_and_task_checks():
    out = torch.randn(8, 1)
    y = torch.randn(8)
    assert make("mse", "regression", 1)(out, y) == pytest.approx(float(F.mse_loss(out[:, 0], y)))
    with pytest.raises(ConfigError, match="loss.name: cross_entropy needs a classification dataset"):
        make("cross_entropy", "regression", 1)
