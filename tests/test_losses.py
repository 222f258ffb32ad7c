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
        n = 4 if task in ("classification", "multilabel") else 1
        out = torch.randn(8, n, requires_grad=True)
        y = {"classification": torch.randint(0, 4, (8,)), "multilabel": torch.randint(0, 2, (8, 4)).float()}.get(
            task, torch.randn(8))
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


def _kl(p, q):
    """KL(p ‖ q) per sample, averaged over the batch, by hand."""
    return float((p * (p.log() - q.log())).sum(1).mean())


@pytest.mark.parametrize("t", [1.0, 3.0])
def test_kl_div_distills_with_the_temperature_on_teacher_and_student(t):
    # Hinton et al.: KL(softmax(z_teacher / T) ‖ softmax(z_student / T)) · T², given the teacher's
    # probabilities p = softmax(z_teacher) as targets
    g = torch.Generator().manual_seed(0)
    z_teacher, z_student = torch.randn(16, 5, generator=g) * 3, torch.randn(16, 5, generator=g) * 3
    p = torch.softmax(z_teacher, 1)
    expected = _kl(torch.softmax(z_teacher.double() / t, 1), torch.softmax(z_student.double() / t, 1)) * t * t
    assert make("kl_div", n=5, temperature=t)(z_student, p) == pytest.approx(expected, rel=1e-4)


def test_kl_div_hard_labels_stay_one_hot_with_label_smoothing_at_any_temperature():
    g = torch.Generator().manual_seed(1)
    z_student, y = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    target = F.one_hot(y, 5).double() * 0.9 + 0.1 / 5
    expected = _kl(target, torch.softmax(z_student.double() / 3, 1)) * 9
    assert make("kl_div", n=5, temperature=3.0, label_smoothing=0.1)(z_student, y) == pytest.approx(expected, rel=1e-4)
    hard = make("kl_div", n=5, temperature=3.0)(z_student, y)
    ce = float(F.cross_entropy(z_student / 3, y)) * 9  # KL from a one-hot target is the cross-entropy
    assert hard == pytest.approx(ce, rel=1e-4)
