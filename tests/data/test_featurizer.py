"""The featurizer hook of data.core.prepare: fitted on the training split only, saved in the run folder, applied
again by load_run / predict to raw inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dnntune import load_run, train
from dnntune.config import validate_recipe
from dnntune.data import core
from dnntune.data.core import DATASETS, Featurizer, RawData, prepare, register_featurizer
from dnntune.registry import NoKnobs

SEEN: list[set] = []


@register_featurizer
class WordCounts(Featurizer):
    """Raw strings → one count per word of the training vocabulary (a toy bag of words)."""

    type = "test_word_counts"

    def __init__(self, vocab=None):
        self.vocab = vocab

    def fit(self, x_train, y_train):
        SEEN.append({str(t) for t in x_train})
        return WordCounts(sorted({w for t in x_train for w in str(t).split()}))

    def transform(self, x):
        index = {w: i for i, w in enumerate(self.vocab)}
        out = np.zeros((len(x), len(self.vocab)), np.float32)
        for r, t in enumerate(x):
            for w in str(t).split():
                if w in index:
                    out[r, index[w]] += 1
        return out

    def input_info(self):
        return {"vocab_size": len(self.vocab)}

    def to_state(self):
        return {"n": len(self.vocab)}, {"vocab.json": json.dumps(self.vocab).encode()}

    @classmethod
    def from_state(cls, state, files):
        vocab = json.loads(files["vocab.json"])
        assert len(vocab) == state["n"]
        return cls(vocab)


def _texts(n=60):
    rng = np.random.default_rng(0)
    words = {0: ["red", "apple", "cherry"], 1: ["blue", "sky", "sea"]}
    y = rng.integers(0, 2, n)
    x = [" ".join(rng.choice(words[int(c)], 3)) + f" only{i}" for i, c in enumerate(y)]
    return np.array(x, dtype=object), y.astype(np.int64)


@pytest.fixture(scope="module")
def toy_text():
    name = "test_featurizer_texts"
    if name not in DATASETS:
        @DATASETS.register(name, NoKnobs, task="classification", kind="tabular")
        def _toy(knobs):
            x, y = _texts()
            return RawData(x, y, "classification", "tabular", class_names=["warm", "cool"], featurizer=WordCounts())
    return name


def test_fitted_on_the_training_split_only(toy_text):
    r = validate_recipe({"data": {"name": toy_text}, "model": {"family": "linear"}})
    SEEN.clear()
    d = prepare(DATASETS.get(toy_text).builder(NoKnobs()), r.data, seed=0)
    assert len(SEEN) == 1 and len(SEEN[0]) == len(d.train)
    # every text has a unique word "only<i>": the vocabulary holds those of training rows, no others
    assert sum(w.startswith("only") for w in d.featurizer.vocab) == len(d.train)
    assert d.input_info == {"vocab_size": len(d.featurizer.vocab)}
    assert d.input_shape == (len(d.featurizer.vocab),)
    assert isinstance(core.Data, type)


def test_run_folder_round_trip_predicts_raw_inputs(toy_text, tmp_path):
    r = validate_recipe({"data": {"name": toy_text}, "model": {"family": "linear"}, "optim": {"lr": 0.1},
                         "train": {"epochs": 30}})
    train(r, out_dir=tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text())  # the featurizer's own file is in the run folder
    run = load_run(tmp_path)
    assert run.preprocessing.featurizer.type == "test_word_counts"
    pred = run.predict(np.array(["red apple cherry", "blue sea sky", "sea sky unseen"], dtype=object))
    assert pred.labels == ["warm", "cool", "cool"]
