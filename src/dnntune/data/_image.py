"""Image augmentation (N, C, H, W) on whole batches, each sample with its own random parameters.

Rotation and zoom go through kornia's ``RandomAffine``, with the ``crop`` translation folded into the same
matrix so the batch is resampled once. A translation alone is done by integer pixel indexing instead
(pad-and-crop without the copy): no interpolation blur, and kornia's ``RandomCrop`` crops sample by sample
in Python. Flip and cutout are one masked ``torch.where`` each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ImageOp = Callable[[torch.Tensor], torch.Tensor]


def random_translate(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Move each image by its own integer offsets in [-max_shift, max_shift] (x and y), zero-filling the edges."""
    n, c, h, w = x.shape
    dev = x.device
    dy = torch.randint(-max_shift, max_shift + 1, (n, 1), device=dev)
    dx = torch.randint(-max_shift, max_shift + 1, (n, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, h) - dy  # source row of each output row, (n, h)
    cols = torch.arange(w, device=dev).view(1, w) - dx
    valid = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
    idx = torch.arange(n, device=dev).view(n, 1, 1)
    # advanced indices around a slice put their dimensions first: (n, h, w, c)
    moved = x[idx, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]].permute(0, 3, 1, 2)
    return torch.where(valid, moved, torch.zeros((), dtype=x.dtype, device=dev))


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def random_cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size``×``size`` square (clipped to the image) at its own random position inside each image.

    Inputs are standardized, so zero is the training mean: the square carries no information.
    """
    n, _, h, w = x.shape
    dev = x.device
    sh, sw = min(size, h), min(size, w)
    top = torch.randint(0, h - sh + 1, (n, 1, 1, 1), device=dev)
    left = torch.randint(0, w - sw + 1, (n, 1, 1, 1), device=dev)
    rows = torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
    return x.masked_fill(inside, 0)


class RandomAffine:
    """Rotation by up to ``degrees``, scale in 1 ± ``zoom`` and translation by up to ``shift`` pixels, one warp.

    Wraps ``kornia.augmentation.RandomAffine`` (bilinear, zero padding, about the image centre); kornia takes
    translation as a fraction of the image size, so one instance is kept per image size.
    """

    def __init__(self, degrees: float, zoom: float, shift: int):
        self.degrees, self.zoom, self.shift = degrees, zoom, shift
        self._augs: dict[tuple[int, int], torch.nn.Module] = {}

    def _aug(self, h: int, w: int) -> torch.nn.Module:
        aug = self._augs.get((h, w))
        if aug is None:
            from kornia.augmentation import RandomAffine as KorniaAffine

            translate = (min(self.shift / w, 1.0), min(self.shift / h, 1.0)) if self.shift else None
            scale = (1 - self.zoom, 1 + self.zoom) if self.zoom else None
            aug = self._augs[(h, w)] = KorniaAffine(degrees=self.degrees, translate=translate, scale=scale, p=1.0)
        return aug

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._aug(*x.shape[-2:])(x).to(x.dtype)


def image_ops(section) -> list[ImageOp]:
    """The batch ops of a validated ``augment:`` section's image knobs, in order: warp, flip, cutout."""
    ops: list[ImageOp] = []
    if section.rotate or section.zoom:
        ops.append(RandomAffine(section.rotate, section.zoom, section.crop))
    elif section.crop:
        ops.append(lambda x: random_translate(x, section.crop))
    if section.flip:
        ops.append(random_flip)
    if section.cutout:
        ops.append(lambda x: random_cutout(x, section.cutout))
    return ops
