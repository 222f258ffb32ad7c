"""Batches without per-sample Python: whole splits as device tensors, indexed by a random permutation."""

from __future__ import annotations

import torch


class TensorLoader:
    """Iterate ``(x, y)`` batches of tensors already on the training device.

    Each epoch draws one ``randperm`` (from ``generator``, on the CPU so it is reproducible on any
    device) and slices it; there is no per-sample Python and no collation. A final batch of a single
    sample is dropped when shuffling (it would break batch norm and adds nothing).

    Example:
        >>> x, y = torch.randn(10, 3), torch.arange(10)
        >>> [len(b[0]) for b in TensorLoader(x, y, batch_size=4, shuffle=False)]
        [4, 4, 2]
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True,
                 generator: torch.Generator | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows, y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        n, bs = len(self.y), self.batch_size
        full, rest = divmod(n, bs)
        return full + (1 if rest > 1 or (rest == 1 and not self.shuffle) else 0)

    def __iter__(self):
        n, bs = len(self.y), self.batch_size
        if self.shuffle:
            perm = torch.randperm(n, generator=self.generator).to(self.x.device, non_blocking=True)
            for i in range(len(self)):
                idx = perm[i * bs:(i + 1) * bs]
                yield self.x[idx], self.y[idx]
        else:
            for i in range(0, n, bs):
                yield self.x[i:i + bs], self.y[i:i + bs]


# `data.in_memory: auto` keeps a split on the device when it takes at most this share of the free memory
IN_MEMORY_SHARE = 0.5


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (None elsewhere: CPU tensors are in memory already)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def keep_on_device(setting, split, device: torch.device) -> bool:
    """``data.in_memory``: ``true`` / ``false`` as set; ``auto`` holds the training split on the device when
    it fits in ``IN_MEMORY_SHARE`` of the free device memory (always on the CPU, where it already is),
    and streams batches through a DataLoader otherwise.

    Example:
        >>> from dnntune.data import Split
        >>> keep_on_device("auto", Split(torch.zeros(10, 3), torch.zeros(10)), torch.device("cpu"))
        True
    """
    if setting != "auto":
        return bool(setting)
    free = free_device_memory(device)
    if free is None:
        return True
    need = sum(t.numel() * t.element_size() for t in (split.x, split.y))
    return need <= IN_MEMORY_SHARE * free
