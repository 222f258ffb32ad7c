"""Image datasets from files: ``idx`` (the MNIST format) and ``image_folder`` (one folder per class).

Every loader returns a :class:`RawData`; errors are :class:`~dnntune.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from pydantic import Field

from ..errors import DataError
from ..registry import Knobs
from .core import DATASETS, RawData
from .files import IMAGE_SUFFIXES, _resolve, class_folder_roots

# --- idx (MNIST format) ---------------------------------------------------------------------------


class IDXKnobs(Knobs):
    path: str = Field(..., description="folder with train-images-idx3-ubyte, ... (optionally .gz)")
    limit: int | None = Field(None, ge=3, description="use at most this many training samples (seeded subset)")


IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, name: str) -> Path | None:
    # some downloads spell the names with a dot: train-images.idx3-ubyte
    dotted = name.replace("-idx", ".idx")
    for base in (name, dotted):
        for candidate in (folder / base, folder / f"{base}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (plain or gzipped): a big-endian header, then the array.

    The header is two zero bytes, a dtype code (0x08 ubyte ... 0x0E float64), the number of dimensions,
    then each dimension as a big-endian uint32.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {buf[:4].hex() or 'empty'}; "
                        "expected 0000 then a dtype code and the number of dimensions)")
    dtype, ndim = np.dtype(IDX_DTYPES[buf[2]]), buf[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(buf) < head:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(buf) - head != expected:
        raise DataError(f"{path}: header says shape {dims} ({expected} bytes of data) but the file has "
                        f"{len(buf) - head}; the file is truncated or corrupt")
    return np.frombuffer(buf, dtype, offset=head).reshape(dims)


def _idx_split(folder: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    files = {}
    for part in ("images", "labels"):
        name = IDX_FILES[f"{which}_{part}"]
        found = _find_idx(folder, name)
        if found is None:
            raise DataError(f"{folder}: missing {name} (or {name}.gz)")
        files[part] = found
    images, labels = read_idx(files["images"]), read_idx(files["labels"])
    if images.ndim != 3:
        raise DataError(f"{files['images']}: expected images of shape (N, H, W), got {images.shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{files['labels']}: expected integer labels of shape (N,), got {labels.shape} "
                        f"{labels.dtype}")
    if len(images) != len(labels):
        raise DataError(f"{files['images']} has {len(images)} images but {files['labels']} has {len(labels)} "
                        "labels")
    x = images[:, None].astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    return x, labels.astype(np.int64)


@DATASETS.register("idx", IDXKnobs, task="classification", kind="image")
def idx_folder(knobs: IDXKnobs) -> RawData:
    """MNIST-format IDX files in a folder (MNIST, Fashion-MNIST...): 1×H×W images in [0, 1], own test split."""
    folder = _resolve(knobs.path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    x, y = _idx_split(folder, "train")
    x_test, y_test = _idx_split(folder, "test")
    if x.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: train images are {x.shape[2:]} but test images are {x_test.shape[2:]}")
    if knobs.limit is not None and knobs.limit < len(x):
        # a fixed-seed subset: the same samples every run, whatever the file's order
        keep = np.sort(np.random.default_rng(0).choice(len(x), knobs.limit, replace=False))
        x, y = x[keep], y[keep]
    if y.min() < 0 or y_test.min() < 0:
        raise DataError(f"{folder}: labels must be >= 0")
    n_classes = int(max(y.max(), y_test.max())) + 1
    return RawData(x, y, "classification", "image", x_test=x_test, y_test=y_test,
                   class_names=[str(i) for i in range(n_classes)], source=str(folder))


# --- image folder ---------------------------------------------------------------------------------


class ImageFolderKnobs(Knobs):
    path: str = Field(..., description="root folder: one subfolder of images per class (or train/ and test/)")
    size: int = Field(32, ge=2, le=1024, description="images are resized to size × size")
    grayscale: bool = Field(False, description="1 grey channel instead of 3 RGB channels")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _scan(root: Path, classes: list[str] | None = None) -> list[tuple[Path, str]]:
    """(image file, class name) pairs under ``root``; ``classes`` restricts to known class names."""
    folders = _class_folders(root)
    if not folders:
        loose = len(_images_in(root))
        hint = f"; found {loose} image(s) directly in it: put them in one subfolder per class" if loose else ""
        raise DataError(f"{root}: no class subfolders (expected one folder of images per class){hint}")
    items = []
    for folder in folders:
        if classes is not None and folder.name not in classes:
            raise DataError(f"{folder}: class {folder.name!r} is not among the training classes "
                            f"({', '.join(classes)})")
        images = _images_in(folder)
        if not images:
            raise DataError(f"{folder}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        items += [(p, folder.name) for p in images]
    return items


def _load_images(items: list[tuple[Path, str]], size: int, grayscale: bool) -> np.ndarray:
    from PIL import Image

    mode = "L" if grayscale else "RGB"
    out = np.empty((len(items), 1 if grayscale else 3, size, size), dtype=np.float32)
    for i, (p, _) in enumerate(items):
        try:
            with Image.open(p) as im:
                im = im.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.float32)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{p}: unreadable image ({e})") from None
        out[i] = a[None] if grayscale else a.transpose(2, 0, 1)
    out /= 255.0
    return out


@DATASETS.register("image_folder", ImageFolderKnobs, task="classification", kind="image")
def image_folder(knobs: ImageFolderKnobs) -> RawData:
    """A folder of images, one subfolder per class; a train/ (and test/) subfolder gives own splits.

    Images (png, jpg, jpeg, bmp, gif; first frame) are converted to RGB or grey and resized to size × size
    without keeping the aspect ratio. Class indices follow the sorted subfolder names.
    """
    train_root, test_root = class_folder_roots(knobs.path)
    train = _scan(train_root)
    classes = sorted({c for _, c in train})
    test = _scan(test_root, classes) if test_root is not None else None
    index = {c: i for i, c in enumerate(classes)}

    def labels(items):
        return np.array([index[c] for _, c in items], dtype=np.int64)

    x = _load_images(train, knobs.size, knobs.grayscale)
    x_test = y_test = None
    if test is not None:
        x_test, y_test = _load_images(test, knobs.size, knobs.grayscale), labels(test)
    return RawData(x, labels(train), "classification", "image", x_test=x_test, y_test=y_test,
                   class_names=classes, source=str(_resolve(knobs.path)))
