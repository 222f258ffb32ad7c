"""Augmentation on whole batches with per-sample random parameters (no per-sample Python).

Signals (N, C, L): shift, scale, noise. Images (N, C, H, W): see ``_image_ops``. Both: mixup and
cutmix, which turn class-index targets into class-probability targets for that batch (multi-label 0/1 vectors
are mixed as they are). Token sequences (N, L) of ids: token_dropout and token_mask only (ids are not
numbers to blend or add noise to).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

Augmenter = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

SIGNAL_KEYS = ("shift", "scale")
IMAGE_KEYS = ("crop", "flip", "rotate", "zoom", "cutout")
TOKEN_KEYS = ("token_dropout", "token_mask")
NUMERIC_KEYS = ("noise", "mixup", "cutmix")  # every kind but token sequences


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each signal by its own integer offset in [-max_shift, max_shift], zero-filling the edge."""
    n, _, length = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 1, 1), device=x.device)
    pos = torch.arange(length, device=x.device).view(1, 1, -1) - shifts
    valid = (pos >= 0) & (pos < length)
    gathered = torch.gather(x, 2, pos.clamp(0, length - 1).expand_as(x))
    return torch.where(valid, gathered, torch.zeros((), dtype=x.dtype, device=x.device))


def random_scale(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Multiply each sample by its own factor in [1 - amount, 1 + amount]."""
    shape = (len(x),) + (1,) * (x.ndim - 1)
    return x * (1 + amount * (2 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1))


def add_noise(x: torch.Tensor, std: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian noise; ``mask`` (per feature, 0/1) limits it to some features (a tabular encoder's numbers:
    its one-hot, indicator and embedding-index features stay exact)."""
    noise = std * torch.randn_like(x)
    return x + (noise if mask is None else noise * mask.to(x.device, x.dtype))


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float, prob: float):
    """Mixup (blend two samples) or cutmix (paste a box of another sample), one λ per batch pair.

    Returns the mixed inputs and class-probability targets. When both are on, each batch uses one of
    the two at random, as in timm.
    """
    if prob < 1.0 and torch.rand(()) >= prob:
        return x, y
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(x), device=x.device)
    y1 = F.one_hot(y, num_classes).to(x.dtype) if y.ndim == 1 else y
    if use_cutmix:
        size = x.shape[2:]
        cut = [int(s * (1 - lam) ** (1 / len(size))) for s in size]
        starts = [int(torch.randint(0, s - c + 1, ())) for s, c in zip(size, cut)]
        region = tuple(slice(st, st + c) for st, c in zip(starts, cut))
        x = x.clone()
        x[(slice(None), slice(None)) + region] = x[perm][(slice(None), slice(None)) + region]
        area = 1.0
        for c, s in zip(cut, size):
            area *= c / s
        lam = 1 - area
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * y1 + (1 - lam) * y1[perm]


def token_dropout(ids: torch.Tensor, p: float, pad: int) -> torch.Tensor:
    """Drop each real token with probability ``p`` (its own draw per token and sample); the kept tokens close
    up in order and the freed places at the end become padding, so the ids stay right-padded."""
    n, length = ids.shape
    keep = (ids != pad) & (torch.rand(ids.shape, device=ids.device) >= p)
    pos = torch.arange(length, device=ids.device).expand(n, -1)
    order = torch.argsort(torch.where(keep, pos, pos + length), dim=1)  # kept tokens first, in order
    return torch.where(keep.gather(1, order), ids.gather(1, order), torch.full_like(ids, pad))


def token_mask(ids: torch.Tensor, p: float, pad: int, unk: int) -> torch.Tensor:
    """Replace each real token with probability ``p`` by the unknown-token id (padding stays padding)."""
    hit = (ids != pad) & (torch.rand(ids.shape, device=ids.device) < p)
    return torch.where(hit, torch.full_like(ids, unk), ids)


def _token_ops(section, data) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The token augmentations of a ``sequence`` dataset, after refusing every other augmentation."""
    other = [k for k in SIGNAL_KEYS + IMAGE_KEYS + NUMERIC_KEYS if getattr(section, k)]
    if other:
        raise ConfigError(f"augment.{other[0]}: {data.name} is text (token ids, not numbers to shift, blend or add "
                          f"noise to); use token_dropout, token_mask")
    info = data.input_info
    pad, unk = int(info.get("pad_id", 0)), int(info.get("unk_id", 1))
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if section.token_dropout:
        ops.append(lambda x: token_dropout(x, section.token_dropout, pad))
    if section.token_mask:
        ops.append(lambda x: token_mask(x, section.token_mask, pad, unk))
    return ops


def _image_ops(section) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    try:
        from ._image import image_ops
    except ImportError as e:  # pragma: no cover
        raise ConfigError(f"augment: image augmentation unavailable ({e})") from None
    return image_ops(section)


def build_augmenter(section, data) -> Augmenter | None:
    """A batch augmenter for a validated ``augment:`` section and prepared data, or None if all off."""
    if not section.enabled():
        return None
    if data.kind == "sequence":
        return _batch_augmenter(_token_ops(section, data), section, data)
    tokens = [k for k in TOKEN_KEYS if getattr(section, k)]
    if tokens:
        raise ConfigError(f"augment.{tokens[0]}: is for text (token sequences); {data.name} is {data.kind} data")
    on = {k for k in SIGNAL_KEYS + IMAGE_KEYS if getattr(section, k)}
    if data.kind == "tabular" and on:
        raise ConfigError(f"augment.{sorted(on)[0]}: {data.name} is tabular; only noise and mixup apply")
    if data.kind == "signal" and on & set(IMAGE_KEYS):
        bad = sorted(on & set(IMAGE_KEYS))[0]
        raise ConfigError(f"augment.{bad}: is for images; {data.name} is a signal: use shift, scale, noise")
    if data.kind == "image" and on & set(SIGNAL_KEYS):
        bad = sorted(on & set(SIGNAL_KEYS))[0]
        raise ConfigError(f"augment.{bad}: is for signals; {data.name} is an image: use crop, flip, rotate, "
                          f"zoom, cutout")
    if (section.mixup or section.cutmix) and data.task == "regression":  # multi-label: the 0/1 vectors mix
        raise ConfigError("augment.mixup: mixup and cutmix need a classification or multi-label dataset")
    if section.cutmix and data.kind == "tabular":
        raise ConfigError("augment.cutmix: needs signals or images")
    ops: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if data.kind == "signal":
        if section.shift:
            ops.append(lambda x: random_shift(x, section.shift))
        if section.scale:
            ops.append(lambda x: random_scale(x, section.scale))
    elif data.kind == "image":
        ops += _image_ops(section)
    if section.noise:
        fz = getattr(data, "featurizer", None)
        mask = fz.normalize_mask() if fz is not None and data.kind == "tabular" else None
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        ops.append(lambda x: add_noise(x, section.noise, mask))
    return _batch_augmenter(ops, section, data)


def _batch_augmenter(ops: list[Callable[[torch.Tensor], torch.Tensor]], section, data) -> Augmenter:
    """The input ops in order, then mixup / cutmix if on."""
    n_cls = data.num_outputs

    def augment(x: torch.Tensor, y: torch.Tensor):
        for op in ops:
            x = op(x)
        if section.mixup or section.cutmix:
            x, y = mix(x, y, n_cls, section.mixup, section.cutmix, section.mix_prob)
        return x, y

    return augment
