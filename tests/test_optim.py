import pytest
import torch

from dnntune.config import ModelSection, OptimSection
from dnntune.engine.optim import OPTIMIZERS, build_optimizer
from dnntune.models import MODELS, InputSpec, build_model


def mlp_with_norm():
    knobs = MODELS.get("mlp").knobs(width=8, depth=2, norm="batch")
    return build_model(ModelSection(family="mlp", knobs=knobs), InputSpec("tabular", (4,)), 3)


def section(name, **kw):
    return OptimSection(name=name, knobs=OPTIMIZERS.get(name).knobs(), **kw)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_reduces_a_simple_loss(name):
    torch.manual_seed(0)
    model = mlp_with_norm()
    lr = 1.0 if name == "adadelta" else 0.05
    opt = build_optimizer(section(name, lr=lr, weight_decay=1e-4), model)
    x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first


def test_no_weight_decay_on_biases_and_norm_weights_by_default():
    model = mlp_with_norm()
    opt = build_optimizer(section("adamw", lr=0.1, weight_decay=0.5), model)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim >= 2), name
    opt = build_optimizer(section("adamw", lr=0.1, weight_decay=0.5, decay_norm_and_bias=True), model)
    assert all(g["weight_decay"] == 0.5 for g in opt.param_groups)


def test_sgd_nesterov_momentum_reaches_torch():
    model = mlp_with_norm()
    knobs = OPTIMIZERS.get("sgd").knobs(momentum=0.9, nesterov=True)
    opt = build_optimizer(OptimSection(name="sgd", lr=0.1, knobs=knobs), model)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9
