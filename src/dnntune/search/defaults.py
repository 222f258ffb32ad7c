"""The default search space per kind of data: what `dnntune tune --data NAME` searches.

Each space covers architecture family and size, optimizer, learning rate, schedule and warmup,
batch size, weight decay, L1, dropout, label smoothing and augmentation strength. Ranges are the
ones that hold good recipes on small and medium datasets; a user's experiment file can narrow,
widen or fix any of them.
"""

from __future__ import annotations

import copy

OPTIM = {
    "name": {"choice": ["adamw", "sgd", "rmsprop"]},
    "lr": {"float": [3e-4, 3e-2], "log": True},
    "weight_decay": {"float": [1e-5, 0.1], "log": True},
    "sgd": {"momentum": {"float": [0.8, 0.99]}, "nesterov": True},
}
SCHEDULE = {
    "name": {"choice": ["cosine", "one_cycle", "step", "constant"]},
    "warmup_epochs": {"float": [0.0, 3.0]},
    "step": {"step_epochs": {"int": [5, 15]}, "gamma": {"float": [0.1, 0.5]}},
}
TRAIN = {
    "epochs": 40,
    "batch_size": {"choice": [32, 64, 128, 256]},
    "l1": {"choice": [0.0, 1e-6, 1e-5]},
    "early_stopping": {"patience": 10},
}

MODELS = {
    "signal": {
        "family": {"choice": ["cnn1d", "resnet"]},
        "cnn1d": {"channels": {"int": [16, 128], "log": True}, "depth": {"int": [2, 5]},
                  "kernel": {"choice": [3, 5, 7]}, "pooling": {"choice": ["max", "none"]},
                  "dropout": {"float": [0.0, 0.5]}, "head": {"choice": ["flatten", "avg"]}},
        "resnet": {"channels": {"int": [16, 64], "log": True}, "stages": {"int": [2, 3]},
                   "blocks_per_stage": {"int": [1, 2]}, "kernel": {"choice": [3, 5, 7]},
                   "dropout": {"float": [0.0, 0.5]}},
    },
    "image": {
        "family": {"choice": ["cnn2d", "resnet", "mlp"]},
        "cnn2d": {"channels": {"int": [16, 96], "log": True}, "depth": {"int": [2, 3]},
                  "kernel": {"choice": [3, 5]}, "pooling": {"choice": ["max", "none"]},
                  "dropout": {"float": [0.0, 0.5]}, "head": {"choice": ["flatten", "avg"]}},
        "resnet": {"channels": {"int": [16, 64], "log": True}, "stages": {"int": [1, 3]},
                   "blocks_per_stage": {"int": [1, 2]}, "dropout": {"float": [0.0, 0.5]}},
        "mlp": {"depth": {"int": [1, 3]}, "width": {"int": [64, 1024], "log": True},
                "dropout": {"float": [0.0, 0.5]}, "norm": {"choice": ["none", "batch"]}},
    },
    "tabular": {
        "family": {"choice": ["mlp", "linear"]},
        "mlp": {"depth": {"int": [1, 4]}, "width": {"int": [16, 512], "log": True},
                "activation": {"choice": ["relu", "gelu", "silu"]}, "norm": {"choice": ["none", "batch", "layer"]},
                "dropout": {"float": [0.0, 0.5]}, "residual": {"choice": [False, True]}},
    },
    "sequence": {
        "family": {"choice": ["embedding_bag", "textcnn", "rnn", "transformer"]},
        # every step updates the whole bigram table (dense gradients): keep it small enough to stay fast
        "embedding_bag": {"dim": {"int": [32, 128], "log": True}, "buckets": {"choice": [0, 4096, 16384]},
                          "dropout": {"float": [0.0, 0.5]}},
        "textcnn": {"embed": {"int": [32, 128], "log": True}, "channels": {"int": [32, 128], "log": True},
                    "dropout": {"float": [0.0, 0.5]}},
        "rnn": {"cell": {"choice": ["gru", "lstm"]}, "embed": {"int": [32, 128], "log": True},
                "hidden": {"int": [32, 128], "log": True}, "pooling": {"choice": ["last", "mean"]},
                "dropout": {"float": [0.0, 0.5]}},
        "transformer": {"d_model": {"choice": [32, 64, 96]}, "heads": 4, "layers": {"int": [1, 2]},
                        "dropout": {"float": [0.0, 0.3]}},
    },
}

# an experiment with model.init_from (a pretrained source): the fine-tuning knobs are searched too
# (docs/transfer.md); freeze.epochs 0 is plain fine-tuning, backbone_lr_mult 1 and layer_decay 1 one lr for all
TRANSFER = {"freeze": {"modules": "backbone", "epochs": {"int": [0, 3]}},
            "backbone_lr_mult": {"float": [0.01, 1.0], "log": True}, "layer_decay": {"float": [0.5, 1.0]}}

# tabular files with categorical columns (csv, parquet): how categories are encoded is searched too
# (data-section dimensions; each trial's encoder is fitted on its own training split)
TABULAR_ENCODING = {"max_onehot": {"choice": [4, 16, 64]}, "embed_dim": {"choice": [0, 4, 8, 16]}}

AUGMENT = {
    "signal": {"shift": {"int": [0, 8]}, "scale": {"float": [0.0, 0.3]}, "noise": {"float": [0.0, 0.2]},
               "mixup": {"choice": [0.0, 0.2, 0.4]}},
    "image": {"crop": {"int": [0, 2]}, "rotate": {"float": [0.0, 15.0]}, "zoom": {"float": [0.0, 0.15]},
              "cutout": {"int": [0, 3]}, "mixup": {"choice": [0.0, 0.2]}},
    "tabular": {"noise": {"float": [0.0, 0.2]}},
    "sequence": {"token_dropout": {"float": [0.0, 0.2]}, "token_mask": {"float": [0.0, 0.2]}},
}
# data knobs searched by default, per kind (only where the user's data section does not set them)
DATA = {
    "sequence": {"vocab_size": {"choice": [4000, 8000, 16000]}},
}
# training settings per kind, where they differ from TRAIN
TRAIN_BY_KIND = {
    "sequence": {"epochs": 30, "batch_size": {"choice": [32, 64, 128]}, "early_stopping": {"patience": 6}},
}


def default_experiment(data: dict, kind: str, task: str) -> dict:
    """The default experiment (search space + search settings) for a ``data:`` section."""
    train = copy.deepcopy(TRAIN)
    if kind == "tabular":
        train["epochs"] = 60
        train["batch_size"] = {"choice": [16, 32, 64, 128]}
    train.update(copy.deepcopy(TRAIN_BY_KIND.get(kind, {})))
    data = {**copy.deepcopy(DATA.get(kind, {})), **data}
    exp = {
        "seed": 0,
        "data": copy.deepcopy(data),
        "model": copy.deepcopy(MODELS[kind]),
        "loss": ({"name": "cross_entropy", "label_smoothing": {"float": [0.0, 0.2]}} if task == "classification"
                 else {"name": "mse"}),
        "optim": copy.deepcopy(OPTIM),
        "schedule": copy.deepcopy(SCHEDULE),
        "train": train,
        "augment": copy.deepcopy(AUGMENT[kind]),
        "search": {},  # SearchSection's defaults: tpe, asha, 50 trials
    }
    if task != "classification":
        exp["augment"].pop("mixup", None)
    if task == "multilabel":  # independent 0/1 labels: per-label sigmoid + binary cross-entropy, no smoothing
        exp["loss"] = {"name": "bce"}
    return exp


def complete_experiment(raw: dict) -> dict:
    """An experiment naming only ``data`` (and perhaps ``seed``/``search``) becomes the default
    experiment for that data; any other experiment is taken as written.

    With a ``model`` section that has ``init_from`` (and no other section) the model is kept as given (the
    pretrained architecture) and the fine-tuning knobs of ``TRANSFER`` join the default space."""
    from ..config import validate_recipe
    from ..data import DATASETS

    data = raw.get("data")
    model = raw.get("model")
    source = isinstance(model, dict) and bool(model.get("init_from"))  # the model is the source's architecture
    if not isinstance(data, dict) or "name" not in data or set(raw) - {"data", "seed", "search",
                                                                        *(["model"] if source else [])}:
        return raw
    entry = DATASETS.get(data["name"], "data.name")
    kind, task = entry.meta.get("kind"), entry.meta.get("task")
    if kind in (None, "any") or task in (None, "any"):
        # file datasets: ask the data itself
        from ..data import load_data

        probe = validate_recipe({"data": data, "model": {"family": "linear"}})
        d = load_data(probe.data, probe.seed)
        kind, task = d.kind, d.task
        categorical = getattr(d.featurizer, "categorical_columns", None)
        if categorical is not None and categorical():  # a tabular file with categories
            data = {**copy.deepcopy(TABULAR_ENCODING), **data}  # the user's own settings win
    exp = default_experiment(data, kind, task)
    exp["seed"] = raw.get("seed", exp["seed"])
    exp["search"] = {**exp["search"], **(raw.get("search") or {})}
    if source:
        exp["model"] = copy.deepcopy(model)
        exp["train"].update(copy.deepcopy(TRANSFER))
    return exp
