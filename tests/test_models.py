import math

import pytest
import torch
from torch import nn

from dnntune.config import validate_recipe
from dnntune.engine import train
from dnntune.errors import ConfigError
from dnntune.models import MODELS, InputSpec, count_params
from dnntune.models.sequence import as_sequence

ALL = ("tabular", "signal", "image")
SPECS = {"tabular": InputSpec("tabular", (13,), "wine"), "signal": InputSpec("signal", (1, 40), "mnist1d"),
         "image": InputSpec("image", (1, 8, 8), "digits"),
         "sequence": InputSpec("sequence", (64,), "texts", info={"vocab_size": 8000, "pad_id": 0})}
DATASETS = {"tabular": {"name": "wine"}, "signal": {"name": "mnist1d", "num_samples": 200},
            "image": {"name": "digits"}}
EXPECTED_KINDS = {"linear": ALL, "mlp": ALL, "cnn1d": ("signal",), "cnn2d": ("image",),
                  "resnet": ("signal", "image"), "rnn": ("signal", "image", "sequence"),
                  "transformer": ("signal", "image", "sequence"), "embedding_bag": ("sequence",),
                  "textcnn": ("sequence",)}  # sequence families: tests/data/test_text.py
NEW_FAMILIES = ("resnet", "rnn", "transformer")
# small sizes for the end-to-end runs; families not listed train with their defaults
SMALL = {"mlp": {"width": 16, "depth": 1}, "cnn1d": {"channels": 8, "depth": 2}, "cnn2d": {"channels": 8, "depth": 2},
         "resnet": {"channels": 8, "stages": 2, "blocks_per_stage": 1}, "rnn": {"hidden": 16},
         "transformer": {"d_model": 16, "heads": 2, "layers": 1}}


# the built-in families: plugin families that other test modules register are tested in tests/test_plugins.py
BUILTIN = [n for n in MODELS.names() if "plugin" not in MODELS.get(n).meta]


def accepted(name: str) -> set[str]:
    """The data kinds a family declares (``kinds=`` when registered), else the table above."""
    kinds = MODELS.get(name).meta.get("kinds")
    if kinds is None:
        assert name in EXPECTED_KINDS, f"register model family {name!r} with kinds=(...)"
        kinds = EXPECTED_KINDS[name]
    return set(kinds)


def build(name: str, spec: InputSpec, num_outputs: int = 3, **knobs) -> nn.Module:
    entry = MODELS.get(name)
    return entry.builder(entry.knobs(**knobs), spec, num_outputs)


def forward_backward(model: nn.Module, spec: InputSpec, num_outputs: int = 3) -> None:
    torch.manual_seed(0)
    out = model(torch.randn(4, *spec.shape))
    assert out.shape == (4, num_outputs)
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("name", BUILTIN)
def test_builds_or_refuses_kind(name, kind):
    spec = SPECS[kind]
    if kind in accepted(name):
        forward_backward(build(name, spec), spec)
    else:
        with pytest.raises(ConfigError) as e:
            build(name, spec)
        assert "model.family" in str(e.value) and kind in str(e.value) and name in str(e.value)


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_declared_kinds(name):
    declared = MODELS.get(name).meta.get("kinds")
    if name in NEW_FAMILIES:
        assert declared is not None
    if declared is not None:
        assert set(declared) == set(EXPECTED_KINDS[name])


@pytest.mark.parametrize("name", BUILTIN)
def test_default_size_is_sensible(name):
    for kind in accepted(name):
        assert 0 < count_params(build(name, SPECS[kind], 10)) < 2_000_000


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_every_knob_documented(name):
    for knob, info in MODELS.get(name).knobs.model_fields.items():
        assert info.description, f"{name}.{knob} has no description"
    assert MODELS.get(name).doc


def test_as_sequence_reads_signals_by_step_and_images_by_row():
    signal = torch.arange(2 * 3 * 5.0).view(2, 3, 5)
    assert as_sequence(signal).shape == (2, 5, 3)
    assert torch.equal(as_sequence(signal)[1, 4], signal[1, :, 4])
    image = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)
    seq = as_sequence(image)
    assert seq.shape == (2, 4, 15)
    assert torch.equal(seq[1, 2], image[1, :, 2, :].flatten())


def test_mnist1d_reference_gru():
    # greydanus/mnist1d models.py GRUBase: nn.GRU(1, 6, bidirectional, batch_first), zero h0, Linear(40·12 → 10)
    r = validate_recipe({"data": {"name": "mnist1d"}, "model": {
        "family": "rnn", "cell": "gru", "hidden": 6, "layers": 1, "bidirectional": True, "dropout": 0.0,
        "pooling": "flatten"}})
    model = MODELS.get("rnn").builder(r.model.knobs, SPECS["signal"], 10)
    gru = model.rnn
    assert isinstance(gru, nn.GRU) and (gru.input_size, gru.hidden_size, gru.num_layers) == (1, 6, 1)
    assert gru.bidirectional and gru.batch_first
    assert (model.head.in_features, model.head.out_features) == (480, 10)
    assert count_params(model) == 5134


@pytest.mark.parametrize("knobs", [
    {"cell": "lstm", "layers": 2, "bidirectional": True, "pooling": "last", "dropout": 0.2},
    {"cell": "lstm", "bidirectional": False, "pooling": "mean"},
    {"cell": "gru", "layers": 3, "bidirectional": False, "pooling": "last"},
])
def test_rnn_variants(knobs):
    for kind in ("signal", "image"):
        forward_backward(build("rnn", SPECS[kind], hidden=8, **knobs), SPECS[kind])


@pytest.mark.parametrize("knobs", [{"patch": 3, "pooling": "cls"}, {"patch": 40}, {"patch": 4, "layers": 3}])
def test_transformer_variants(knobs):
    for kind in ("signal", "image"):
        forward_backward(build("transformer", SPECS[kind], d_model=16, heads=4, **knobs), SPECS[kind])


def test_transformer_patches_group_steps():
    model = build("transformer", SPECS["signal"], d_model=16, heads=2, patch=3, pooling="cls")
    assert model.pos.shape == (1, 14 + 1, 16)  # ceil(40 / 3) tokens + the class token
    assert model.embed.in_features == 3


def test_transformer_heads_must_divide_d_model():
    with pytest.raises(ConfigError) as e:
        validate_recipe({"data": {"name": "mnist1d"}, "model": {"family": "transformer", "d_model": 60, "heads": 8}})
    assert "model.heads" in str(e.value) and "model.d_model" in str(e.value)


def test_resnet_dimension_follows_the_data():
    convs = lambda m: {type(c) for c in m.modules() if isinstance(c, nn.Conv1d | nn.Conv2d)}  # noqa: E731
    assert convs(build("resnet", SPECS["signal"])) == {nn.Conv1d}
    assert convs(build("resnet", SPECS["image"])) == {nn.Conv2d}


@pytest.mark.parametrize("knobs", [{"stages": 6, "blocks_per_stage": 1, "channels": 4}, {"batch_norm": False},
                                   {"kernel": 1, "activation": "gelu", "dropout": 0.5}, {"kernel": 5}])
def test_resnet_variants(knobs):
    for kind in ("signal", "image"):
        forward_backward(build("resnet", SPECS[kind], **{"channels": 8, **knobs}), SPECS[kind])


def test_resnet_even_kernel_is_refused():
    with pytest.raises(ConfigError, match="model.kernel"):
        validate_recipe({"data": {"name": "digits"}, "model": {"family": "resnet", "kernel": 4}})


def test_resnet_shortcuts():
    model = build("resnet", SPECS["image"], channels=8, stages=2, blocks_per_stage=2)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock"]
    assert [isinstance(b.shortcut, nn.Identity) for b in blocks] == [True, True, False, True]


E2E = [(name, kind) for name in MODELS.names() for kind in ALL if kind in accepted(name)]


CHANCE = {"tabular": 1 / 3, "image": 1 / 10}  # wine, digits: balanced classes


@pytest.mark.parametrize(("name", "kind"), E2E, ids=[f"{n}-{k}" for n, k in E2E])
def test_every_family_learns_each_kind_of_data_it_accepts(name, kind):
    r = validate_recipe({"data": DATASETS[kind], "model": {"family": name, **SMALL.get(name, {})},
                         "optim": {"name": "adamw", "lr": 0.01},
                         "train": {"epochs": 3, "batch_size": 64 if kind == "image" else 16, "checkpoint": False}})
    result = train(r)
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and result.epochs == 3
    # training moves the model: the loss falls every epoch, and by more than a model that does not learn
    # drifts (< 0.5%, batch-norm statistics); the slowest learner here, the GRU on 200 MNIST-1D samples, 2.7%
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.985 * losses[0], losses
    if kind in CHANCE:  # MNIST-1D with 200 samples is too hard for 3 epochs to test on
        assert result.metrics["test"]["accuracy"] > CHANCE[kind] + 0.3, result.metrics["test"]
