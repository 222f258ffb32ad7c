"""Datasets that need no files: scikit-learn's bundled sets, MNIST-1D (generated, cached) and synthetic."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import numpy as np
from pydantic import Field

from ..registry import Knobs, NoKnobs
from .core import DATASETS, RawData, cache_dir


def _sklearn(loader, task, kind="tabular", image_shape=None):
    bunch = loader()
    x = bunch.data.astype(np.float32)
    if image_shape is not None:
        x = x.reshape(len(x), *image_shape)
    y = bunch.target.astype(np.int64 if task == "classification" else np.float32)
    names = [str(n) for n in bunch.target_names] if task == "classification" else None
    return RawData(x, y, task, kind, class_names=names, source=f"sklearn.datasets.{loader.__name__}")


@DATASETS.register("digits", NoKnobs, task="classification", kind="image")
def digits(knobs: NoKnobs) -> RawData:
    """scikit-learn digits: 1797 8×8 grey images of handwritten digits, 10 classes."""
    from sklearn.datasets import load_digits

    return _sklearn(load_digits, "classification", "image", (1, 8, 8))


@DATASETS.register("iris", NoKnobs, task="classification", kind="tabular")
def iris(knobs: NoKnobs) -> RawData:
    """scikit-learn iris: 150 flowers, 4 features, 3 classes."""
    from sklearn.datasets import load_iris

    return _sklearn(load_iris, "classification")


@DATASETS.register("wine", NoKnobs, task="classification", kind="tabular")
def wine(knobs: NoKnobs) -> RawData:
    """scikit-learn wine: 178 wines, 13 features, 3 classes."""
    from sklearn.datasets import load_wine

    return _sklearn(load_wine, "classification")


@DATASETS.register("breast_cancer", NoKnobs, task="classification", kind="tabular")
def breast_cancer(knobs: NoKnobs) -> RawData:
    """scikit-learn breast cancer: 569 tumours, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    return _sklearn(load_breast_cancer, "classification")


@DATASETS.register("diabetes", NoKnobs, task="regression", kind="tabular")
def diabetes(knobs: NoKnobs) -> RawData:
    """scikit-learn diabetes: 442 patients, 10 features, disease progression (regression)."""
    from sklearn.datasets import load_diabetes

    raw = _sklearn(load_diabetes, "regression")
    return raw


class MNIST1DKnobs(Knobs):
    num_samples: int = Field(5000, ge=20, description="samples generated (train + test)")
    train_split: float = Field(0.8, gt=0, lt=1, description="share of samples in the own train split")
    seed: int = Field(42, ge=0, description="generation seed (42 = the authors' dataset)")
    template_len: int = Field(12, ge=2)
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = Field(0.4, ge=0)
    max_translation: int = Field(48, ge=0)
    corr_noise_scale: float = Field(0.25, ge=0)
    iid_noise_scale: float = Field(2e-2, ge=0)
    shear_scale: float = Field(0.75, ge=0)
    shuffle_seq: bool = False
    final_seq_length: int = Field(40, ge=4)


@DATASETS.register("mnist1d", MNIST1DKnobs, task="classification", kind="signal")
def mnist1d(knobs: MNIST1DKnobs) -> RawData:
    """MNIST-1D (Greydanus 2020): 1-D signals of length 40, 10 classes; own 4000/1000 split by default."""
    args = knobs.model_dump()
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        z = np.load(path)
        x, y, xt, yt = z["x"], z["y"], z["x_test"], z["y_test"]
    else:
        from mnist1d.data import get_dataset_args, make_dataset
        from mnist1d.utils import ObjectView

        full = get_dataset_args(as_dict=True)
        full.update({k: list(v) if isinstance(v, tuple) else v for k, v in args.items()})
        d = make_dataset(ObjectView(full))
        x, y, xt, yt = d["x"], d["y"], d["x_test"], d["y_test"]
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp.npz")
        np.savez(tmp, x=x, y=y, x_test=xt, y_test=yt)
        tmp.replace(path)  # atomic: concurrent workers never read a half-written cache
    as_signal = lambda a: a.astype(np.float32)[:, None, :]  # noqa: E731  (N, 1, L)
    return RawData(as_signal(x), y.astype(np.int64), "classification", "signal",
                   x_test=as_signal(xt), y_test=yt.astype(np.int64),
                   class_names=[str(i) for i in range(10)], source=f"mnist1d generated, cache {path.name}")


class SyntheticKnobs(Knobs):
    task: Literal["classification", "regression"] = "classification"
    n_samples: int = Field(1000, ge=10)
    n_features: int = Field(20, ge=1)
    n_informative: int = Field(10, ge=1)
    n_classes: int = Field(2, ge=2)
    noise: float = Field(0.1, ge=0, description="label noise (classification) / target noise std (regr.)")
    seed: int = Field(0, ge=0)


@DATASETS.register("synthetic", SyntheticKnobs, task="any", kind="tabular")
def synthetic(knobs: SyntheticKnobs) -> RawData:
    """Synthetic tabular data from scikit-learn's make_classification / make_regression."""
    from sklearn.datasets import make_classification, make_regression

    informative = min(knobs.n_informative, knobs.n_features)
    if knobs.task == "classification":
        x, y = make_classification(
            n_samples=knobs.n_samples, n_features=knobs.n_features, n_informative=informative,
            n_redundant=0, n_classes=knobs.n_classes, flip_y=knobs.noise, random_state=knobs.seed,
            n_clusters_per_class=1)
        return RawData(x.astype(np.float32), y.astype(np.int64), "classification", "tabular",
                       class_names=[str(i) for i in range(knobs.n_classes)], source="make_classification")
    x, y = make_regression(n_samples=knobs.n_samples, n_features=knobs.n_features, n_informative=informative,
                           noise=knobs.noise, random_state=knobs.seed)
    y = (y - y.mean()) / y.std()
    return RawData(x.astype(np.float32), y.astype(np.float32), "regression", "tabular", source="make_regression")


class MultilabelKnobs(Knobs):
    n_samples: int = Field(1000, ge=10)
    n_features: int = Field(20, ge=1)
    n_labels: int = Field(5, ge=2, description="labels (outputs) K")
    avg_labels: int = Field(2, ge=1, description="average number of labels per sample")
    allow_unlabeled: bool = Field(True, description="samples may have no label at all")
    seed: int = Field(0, ge=0)


@DATASETS.register("multilabel", MultilabelKnobs, task="multilabel", kind="tabular")
def multilabel(knobs: MultilabelKnobs) -> RawData:
    """Synthetic multi-label tabular data (scikit-learn's make_multilabel_classification): counts of words per
    sample, K labels named label_0 ... label_{K-1}; for tests and examples, no download."""
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(
        n_samples=knobs.n_samples, n_features=knobs.n_features, n_classes=knobs.n_labels,
        n_labels=knobs.avg_labels, allow_unlabeled=knobs.allow_unlabeled, random_state=knobs.seed)
    return RawData(x.astype(np.float32), y.astype(np.float32), "multilabel", "tabular",
                   class_names=[f"label_{k}" for k in range(knobs.n_labels)], source="make_multilabel_classification")
