from types import SimpleNamespace

import pytest
import torch

from dnntune.config import AugmentSection, validate_recipe
from dnntune.data._image import image_ops, random_cutout, random_flip, random_translate
from dnntune.data.augment import IMAGE_KEYS, SIGNAL_KEYS, add_noise, build_augmenter, mix, random_scale, random_shift
from dnntune.errors import ConfigError

IMAGE_KNOBS = {"crop": {"crop": 2}, "flip": {"flip": True}, "rotate": {"rotate": 30.0}, "zoom": {"zoom": 0.3},
               "cutout": {"cutout": 3}, "affine": {"rotate": 15.0, "zoom": 0.1, "crop": 1},
               "all": {"rotate": 15.0, "zoom": 0.1, "crop": 1, "flip": True, "cutout": 2}}
SIGNAL_OPS = {"shift": lambda x: random_shift(x, 3), "scale": lambda x: random_scale(x, 0.3),
              "noise": lambda x: add_noise(x, 0.1)}
ON = {"shift": 2, "scale": 0.1, "crop": 2, "flip": True, "rotate": 10.0, "zoom": 0.1, "cutout": 2}


def data(kind: str, task: str = "classification"):
    return SimpleNamespace(kind=kind, name=f"a {kind} dataset", task=task, num_outputs=10)


def compose(knobs: dict):
    ops = image_ops(AugmentSection(**knobs))

    def run(x):
        for op in ops:
            x = op(x)
        return x

    return run


def same_batch(n: int, *shape: int, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, *shape, dtype=dtype).expand(n, *shape).contiguous()


def all_samples_equal(x: torch.Tensor) -> bool:
    return all(torch.equal(x[0], x[i]) for i in range(1, len(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", IMAGE_KNOBS)
def test_image_ops_keep_shape_dtype_and_vary_per_sample(name, dtype):
    x = same_batch(32, 3, 10, 12, dtype=dtype)
    y = compose(IMAGE_KNOBS[name])(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.isfinite(y).all()
    assert not all_samples_equal(y)


@pytest.mark.parametrize("name", SIGNAL_OPS)
def test_signal_ops_keep_shape_dtype_and_vary_per_sample(name):
    for dtype in (torch.float32, torch.float64):
        x = same_batch(32, 2, 40, dtype=dtype)
        y = SIGNAL_OPS[name](x)
        assert y.shape == x.shape and y.dtype == dtype
        assert not all_samples_equal(y)


def test_rotate_zoom_and_crop_resample_once():
    assert len(image_ops(AugmentSection(rotate=10.0, zoom=0.1, crop=2))) == 1
    assert len(image_ops(AugmentSection(**IMAGE_KNOBS["all"]))) == 3


def test_flip_mirrors_whole_samples():
    x = same_batch(64, 2, 5, 7)
    y = random_flip(x)
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_shift_zero_fills():
    x = torch.arange(1, 41, dtype=torch.float32).view(1, 1, 40).expand(200, 2, 40).contiguous()
    y = random_shift(x, 3)
    seen = set()
    for row in y[:, 0]:
        zeros = (row == 0).nonzero().flatten().tolist()
        assert len(zeros) <= 3
        s = len(zeros) if zeros and zeros[0] == 0 else -len(zeros)
        assert zeros == (list(range(s)) if s > 0 else list(range(40 + s, 40)))  # zeros only at one edge
        assert torch.equal(row, torch.roll(x[0, 0], s).masked_fill(row == 0, 0))
        seen.add(s)
    assert seen == set(range(-3, 4))
    assert torch.equal(y[:, 0], y[:, 1])  # one offset per sample, all channels


def test_crop_translates_by_whole_pixels_and_zero_fills():
    x = same_batch(50, 2, 6, 7) + 10  # no zeros in the input
    y = random_translate(x, 2)
    seen = set()
    for i in range(len(x)):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(y[i], _shifted(x[i], dy, dx))]
        assert match, f"sample {i} is not an integer translation of its input"
        seen.add(match[0])
    assert len(seen) > 5


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[:, max(-dy, 0):h - max(dy, 0),
                                                                       max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.mark.parametrize("size", [1, 3, 8, 20])
def test_cutout_zeroes_exactly_a_square(size):
    x = torch.ones(64, 3, 8, 10)
    y = random_cutout(x, size)
    side_h, side_w = min(size, 8), min(size, 10)
    corners = set()
    for img in y:
        zero = img == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # same square in every channel
        rows, cols = zero[0].nonzero(as_tuple=True)
        assert len(rows) == side_h * side_w
        assert rows.max() - rows.min() + 1 == side_h and cols.max() - cols.min() + 1 == side_w
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 1 or size >= 8
    assert torch.equal(y[y != 0], torch.ones_like(y[y != 0]))  # everything else untouched


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
@pytest.mark.parametrize("shape", [(2, 40), (1, 8, 8)])
def test_mix_targets_are_probabilities(mixup, cutmix, shape):
    torch.manual_seed(0)
    mixed = 0
    for _ in range(5):
        x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
        xm, ym = mix(x, y, 10, mixup, cutmix, 1.0)
        assert xm.shape == x.shape and ym.shape == (16, 10)
        assert (ym >= 0).all() and torch.allclose(ym.sum(1), torch.ones(16))
        # samples are mixed with a permutation of the batch: each label keeps its total weight
        assert torch.allclose(ym.sum(0), torch.nn.functional.one_hot(y, 10).float().sum(0), atol=1e-5)
        soft = ym.max(1).values < 1 - 1e-6  # targets of two classes ...
        assert all(not torch.equal(xm[i], x[i]) for i in soft.nonzero().flatten())  # ... whose inputs changed
        mixed += int(soft.sum())
        again = mix(x, ym, 10, mixup, cutmix, 1.0)[1]  # already-soft targets stay probabilities
        assert torch.allclose(again.sum(1), torch.ones(16))
    assert mixed >= 16  # it did mix (a third of the samples, at least)


@pytest.mark.parametrize("key", IMAGE_KEYS)
def test_image_ops_refused_on_signals(key):
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        build_augmenter(AugmentSection(**{key: ON[key]}), data("signal"))


@pytest.mark.parametrize("key", SIGNAL_KEYS)
def test_signal_ops_refused_on_images(key):
    with pytest.raises(ConfigError, match=f"augment.{key}"):
        build_augmenter(AugmentSection(**{key: ON[key]}), data("image"))


def test_empty_section_gives_no_augmenter():
    assert build_augmenter(AugmentSection(), data("image")) is None
    r = validate_recipe({"data": {"name": "digits"}, "model": {"family": "mlp"}, "augment": {}})
    assert build_augmenter(r.augment, data("image")) is None


def test_augmenter_on_image_batches():
    aug = build_augmenter(AugmentSection(**IMAGE_KNOBS["all"], noise=0.1, cutmix=1.0), data("image"))
    torch.manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    xa, ya = aug(x, y)
    assert xa.shape == x.shape and xa.dtype == x.dtype and ya.shape == (32, 10)
    assert not any(torch.equal(xa[i], x[i]) for i in range(32))  # noise alone changes every sample
    assert torch.allclose(ya.sum(1), torch.ones(32)) and (ya.max(1).values < 1).any()  # cutmixed targets


def test_training_with_image_augmentation_is_seeded():
    from dnntune.engine import train

    r = validate_recipe({"seed": 3, "data": {"name": "digits"}, "model": {"family": "cnn2d", "channels": 8, "depth": 2},
                         "augment": IMAGE_KNOBS["all"], "train": {"epochs": 1, "batch_size": 64, "checkpoint": False}})
    a, b = train(r), train(r)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert a.metrics["val"]["accuracy"] == b.metrics["val"]["accuracy"]
    plain = train(r.model_copy(update={"augment": AugmentSection()}))
    assert plain.history[0]["train_loss"] != a.history[0]["train_loss"]  # the augmentation was applied
