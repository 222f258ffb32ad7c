"""Text classification: text_csv / text_folder, the tokenizer (trained on the training split only, saved and
reloaded), the sequence model families (padding-invariant), token augmentation, bad input, and the whole path
train → tune → report → load_run / predict / serve / export on a tiny corpus."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dnntune import load_run, train
from dnntune.cli import main
from dnntune.config import AugmentSection, validate_recipe
from dnntune.data import load_data
from dnntune.data.augment import build_augmenter, token_dropout, token_mask
from dnntune.data.core import DATASETS, _checked, _partition
from dnntune.data.text import TextTokenizer
from dnntune.errors import ConfigError, DataError
from dnntune.models import MODELS, InputSpec

WORDS = {"fruit": "apple cherry banana peach sweet ripe juicy orchard",
         "sea": "wave tide ocean salt harbour sailor coral reef",
         "space": "orbit rocket planet comet galaxy nebula launch crater"}


def corpus(n_per_class: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """Short documents whose words mostly come from their class's list, with shared filler words."""
    rng = np.random.default_rng(seed)
    filler = "the a of and with in on very".split()
    rows = []
    for label, words in WORDS.items():
        words = words.split()
        for _ in range(n_per_class):
            k = int(rng.integers(3, 9))
            doc = [str(rng.choice(words)) if rng.random() < 0.7 else str(rng.choice(filler)) for _ in range(k)]
            rows.append((" ".join(doc), label))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_csv(path, rows, header=("text", "label", "note")):
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for text, label in rows:
            w.writerow([text, label, "ignored"][:len(header)])
    return path


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("text") / "docs.csv", corpus())


def data_section(path, **knobs):
    return {"name": "text_csv", "path": str(path), "vocab_size": 200, "max_length": 16, **knobs}


# --- the tokenizer --------------------------------------------------------------------------------


def text_folder(root):
    """root/{train,test}/<class>/<i>.txt; the train and test texts each hold a word of their own."""
    for split, extra in (("train", "quartzite"), ("test", "zanzibarite")):
        for label, words in WORDS.items():
            (root / split / label).mkdir(parents=True)
            for i in range(12):  # each split's own word, many times: a tokenizer trained on it learns it whole
                (root / split / label / f"{i}.txt").write_text(f"{words} {extra} {extra}", encoding="utf-8")
    return root


def test_tokenizer_is_trained_on_the_training_split_only(tmp_path):
    root = text_folder(tmp_path / "folder")
    r = validate_recipe({"data": {"name": "text_folder", "path": str(root), "vocab_size": 300, "max_length": 20},
                         "model": {"family": "embedding_bag"}})
    d = load_data(r.data, r.seed)
    vocab = d.featurizer.fitted.get_vocab()
    assert "quartzite" in vocab and "zanzibarite" not in vocab
    assert len(d.test) == 36 and d.class_names == sorted(WORDS)
    # exactly the tokenizer of the training rows: validation rows are not seen either
    raw = DATASETS.get("text_folder").builder(r.data.knobs)
    x_train = _partition(raw, *_checked(raw, "text_folder"), r.data, r.seed, None)[0]
    alone = TextTokenizer(vocab_size=300, max_length=20).fit(x_train, None)
    assert alone.fitted.get_vocab() == vocab
    assert d.input_info["vocab_size"] == len(vocab) and d.input_info["pad_id"] == 0
    assert d.input_shape == (20,) and d.train.x.dtype == torch.long and d.mean is None


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "byte_level"])
def test_tokenizer_saved_and_reloaded_gives_identical_ids(kind):
    texts = [t for t, _ in corpus()]
    fz = TextTokenizer(kind, vocab_size=300, max_length=12).fit(texts[:60], None)
    again = TextTokenizer.from_state(*fz.to_state())
    probe = texts[60:] + ["", "unseen wörds ünïcode 🚀 and a very long text " * 5, "UPPER Case"]
    ids = fz.transform(probe)
    assert ids.shape == (len(probe), 12) and ids.dtype == np.int64
    assert np.array_equal(ids, again.transform(probe))
    assert (ids[len(texts) - 60] == 0).all()  # the empty text is all padding
    assert (ids[:len(texts) - 60] != 0).any(1).all()
    assert np.array_equal(fz.transform(ids), ids)  # token ids pass through, checked
    with pytest.raises(DataError, match=r"inputs\[1\]: expected a text"):
        fz.transform(["fine", None])


# --- models: padding invariance -------------------------------------------------------------------

SEQUENCE_FAMILIES = [n for n in MODELS.names() if "sequence" in (MODELS.get(n).meta.get("kinds") or ())]
VARIANTS = {"rnn": [{}, {"cell": "lstm", "layers": 2, "pooling": "mean", "dropout": 0.2},
                    {"bidirectional": False}],
            "transformer": [{}, {"pooling": "cls", "layers": 1}], "embedding_bag": [{}, {"buckets": 0, "hidden": 8}],
            "textcnn": [{}, {"widths": (1, 2, 7)}]}


def test_every_text_family_is_tested():
    assert set(SEQUENCE_FAMILIES) >= {"embedding_bag", "textcnn", "rnn", "transformer"}


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_same_text_padded_to_two_lengths_gives_the_same_outputs(family):
    spec = InputSpec("sequence", (40,), "toy", info={"vocab_size": 50, "pad_id": 0})
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (6, 10))
    ids[1, 4:] = 0  # a shorter text
    ids[2] = 0  # an empty one
    ids[3, 1:] = 0  # one token
    longer = torch.nn.functional.pad(ids, (0, 30))
    for knobs in VARIANTS.get(family, [{}]):
        entry = MODELS.get(family)
        model = entry.builder(entry.knobs(**knobs), spec, 3).eval()
        with torch.no_grad():
            a, b = model(ids), model(longer)
        assert a.shape == (6, 3) and torch.isfinite(a).all(), knobs
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a[0], a[4]), knobs  # the outputs do depend on the text
        loss = model.train()(longer).square().mean()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("family", SEQUENCE_FAMILIES)
def test_text_families_need_a_vocabulary(family):
    entry = MODELS.get(family)
    with pytest.raises(ConfigError, match="vocabulary"):
        entry.builder(entry.knobs(), InputSpec("sequence", (8,), "toy"), 2)


def test_options_that_make_no_sense_for_text_are_refused():
    spec = InputSpec("sequence", (8,), "toy", info={"vocab_size": 20})
    with pytest.raises(ConfigError, match="model.pooling: flatten"):
        MODELS.get("rnn").builder(MODELS.get("rnn").knobs(pooling="flatten"), spec, 2)
    with pytest.raises(ConfigError, match="model.patch"):
        MODELS.get("transformer").builder(MODELS.get("transformer").knobs(patch=2), spec, 2)


# --- augmentation ---------------------------------------------------------------------------------


def test_token_dropout_drops_real_tokens_and_keeps_the_rest_in_order():
    torch.manual_seed(0)
    ids = torch.arange(1, 201).repeat(64, 1)
    ids[:, 150:] = 0
    out = token_dropout(ids, 0.3, pad=0)
    assert out.shape == ids.shape and out.dtype == ids.dtype
    for row in out:
        kept = row[row != 0]
        assert (row[len(kept):] == 0).all()  # still right-padded
        assert (kept.diff() > 0).all() and kept.max() <= 150  # a subsequence, in order, no padding revived
    share = (out != 0).sum() / (ids != 0).sum()
    assert 0.65 < share < 0.75
    assert not torch.equal(out[0], out[1])  # per-sample draws
    assert torch.equal(token_dropout(ids, 0.0, pad=0), ids)


def test_token_mask_replaces_real_tokens_only():
    torch.manual_seed(0)
    ids = torch.randint(3, 100, (32, 50))
    ids[:, 40:] = 0
    out = token_mask(ids, 0.2, pad=0, unk=1)
    changed = out != ids
    assert (out[changed] == 1).all() and not changed[:, 40:].any()
    assert 0.15 < changed.float().sum() / (ids != 0).sum() < 0.25


def test_augmentations_are_checked_against_the_data_kind(text_csv):
    text = load_data(validate_recipe({"data": data_section(text_csv), "model": {"family": "textcnn"}}).data)
    aug = build_augmenter(AugmentSection(token_dropout=0.5, token_mask=0.5), text)
    x, y = aug(text.train.x, text.train.y)
    assert x.shape == text.train.x.shape and x.dtype == torch.long and torch.equal(y, text.train.y)
    assert ((x != 0).sum(1) <= (text.train.x != 0).sum(1)).all() and (x == 1).any()
    for got, orig in zip(x.tolist(), text.train.x.tolist()):  # tokens of the text, or unknown
        assert set(got) - {0, 1} <= set(orig)
    for bad in ({"noise": 0.1}, {"mixup": 0.2}, {"shift": 2}, {"crop": 2}):
        with pytest.raises(ConfigError, match=rf"augment.{next(iter(bad))}: .* is text .* token_dropout"):
            build_augmenter(AugmentSection(**bad), text)
    wine = load_data(validate_recipe({"data": {"name": "wine"}, "model": {"family": "mlp"}}).data)
    with pytest.raises(ConfigError, match="augment.token_mask: is for text"):
        build_augmenter(AugmentSection(token_mask=0.1), wine)


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, knobs, message", [
    ([("", "a"), ("  ", "b"), ("", "a"), ("", "b")], {}, r"docs.csv: text column 'text' is empty in every row"),
    ([("one", "a"), ("two", "a"), ("three", "a")], {}, r"docs.csv: label column 'label' holds a single class 'a'"),
    ([("one", "a"), ("two", "b"), ("three", "a")], {"text": "body"}, r"docs.csv: no text column 'body'; columns: "
                                                                     r"text, label, note"),
    ([("one", "a"), ("two", "b"), ("three", "a")], {"label": "y"}, r"docs.csv: no label column 'y'"),
    ([("one", "a"), ("two", ""), ("three", "a")], {}, r"docs.csv: line 3: label column 'label' is empty"),
])
def test_bad_text_csv_exits_2_naming_the_file_and_column(tmp_path, capsys, rows, knobs, message):
    path = write_csv(tmp_path / "docs.csv", rows)
    recipe = tmp_path / "r.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump({"data": {**data_section(path), **knobs}, "model": {"family": "textcnn"}}))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_text_folder_trains_and_predicts_a_folder(tmp_path, capsys):
    root = text_folder(tmp_path / "folder")
    r = validate_recipe({"data": {"name": "text_folder", "path": str(root), "vocab_size": 300, "max_length": 20},
                         "model": {"family": "textcnn", "embed": 16, "channels": 8}, "train": {"epochs": 3}})
    res = train(r, out_dir=tmp_path / "run")
    assert set(res.metrics) == {"train", "val", "test"}
    assert main(["predict", str(tmp_path / "run"), str(root / "test")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "id,label" and len(lines) == 37 and lines[1].startswith("fruit/0.txt,")


def test_text_folder_with_one_class_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.txt").write_text("hello there", encoding="utf-8")
    r = validate_recipe({"data": {"name": "text_folder", "path": str(tmp_path)}, "model": {"family": "textcnn"}})
    with pytest.raises(DataError, match="single class 'only'"):
        load_data(r.data)


# --- the whole path -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_run(text_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-run")
    r = validate_recipe({"data": data_section(text_csv), "model": {"family": "embedding_bag", "dim": 16},
                         "optim": {"lr": 0.05}, "train": {"epochs": 15, "batch_size": 16},
                         "augment": {"token_dropout": 0.1}})
    train(r, out_dir=out)
    return out


def test_train_saves_the_tokenizer_and_load_run_predicts_raw_texts(text_run, text_csv):
    assert json.loads((text_run / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    run = load_run(text_run)
    raw = DATASETS.get("text_csv").builder(run.recipe.data.knobs)
    _, _, x_test, _, _, y_test = _partition(raw, *_checked(raw, "text_csv"), run.recipe.data, run.recipe.seed, None)
    pred = run.predict(list(x_test))  # raw strings; the saved tokenizer encodes them
    summary = json.loads((text_run / "summary.json").read_text())
    acc = float((pred.indices == y_test).mean())
    assert acc == pytest.approx(summary["metrics"]["test"]["accuracy"], abs=1e-12)
    assert acc > 0.8  # the classes' words are easy to learn
    assert run.predict(np.array(["ocean wave tide sailor", "rocket orbit planet"], dtype=object)).labels == [
        "sea", "space"]


def test_predict_cli_reads_the_text_column_of_a_csv(text_run, tmp_path, capsys):
    new = write_csv(tmp_path / "new.csv", [("juicy ripe apple", "?"), ("a comet and a galaxy", "?")])
    assert main(["predict", str(text_run), str(new)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["id,label", "0,fruit", "1,space"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.txt").write_text("coral reef and salt", encoding="utf-8")
    assert main(["predict", str(text_run), str(tmp_path / "docs")]) == 0
    assert capsys.readouterr().out.splitlines() == ["id,label", "x.txt,sea"]
    (tmp_path / "y.txt").write_text("nebula launch", encoding="utf-8")
    assert main(["predict", str(text_run), str(tmp_path / "docs" / "x.txt"), str(tmp_path / "y.txt")]) == 0
    assert capsys.readouterr().out.splitlines() == ["id,label", "x.txt,sea", "y.txt,space"]
    assert main(["predict", str(text_run), str(tmp_path / "nope.npy")]) == 2


def test_serve_takes_strings(text_run):
    from starlette.testclient import TestClient

    from dnntune.deploy._serve_app import create_app

    with TestClient(create_app(load_run(text_run))) as client:
        r = client.post("/predict", json={"inputs": ["orbit rocket launch", "peach cherry"]})
        assert r.status_code == 200, r.text
        assert r.json()["labels"] == ["space", "fruit"]
        assert client.post("/predict", json={"inputs": "tide"}).json()["labels"] == ["sea"]
        bad = client.post("/predict", json={"inputs": [[1, 2]]})
        assert bad.status_code == 422 and "inputs[0]" in bad.json()["detail"]


# embedding_bag and textcnn export text in tests/deploy/test_export.py (every family, on a kind it takes)
@pytest.mark.parametrize("family, knobs", [("transformer", {"d_model": 16, "heads": 2, "layers": 1}),
                                           ("rnn", {"hidden": 8, "embed": 8, "layers": 2})])
def test_onnx_export_takes_token_ids_and_load_onnx_takes_texts(text_csv, tmp_path, family, knobs):
    pytest.importorskip("onnxruntime")
    from dnntune.deploy import export
    from dnntune.deploy._onnx import load_onnx

    r = validate_recipe({"data": data_section(text_csv), "model": {"family": family, **knobs},
                         "train": {"epochs": 2}})
    train(r, out_dir=tmp_path)
    res = export(tmp_path, "onnx")
    assert res.real_inputs and res.max_abs_diff < 1e-4
    meta = json.loads(res.metadata_path.read_text())
    assert meta["input"]["dtype"] == "int64" and meta["featurizer_files"] == {"tokenizer.json":
                                                                               "model.onnx.tokenizer.json"}
    texts = ["ocean wave tide sailor", "rocket orbit planet", ""]
    onnx, torch_run = load_onnx(res.path, device="cpu"), load_run(tmp_path)
    np.testing.assert_allclose(onnx.predict(texts).outputs, torch_run.predict(texts).outputs, atol=1e-4)
    from starlette.testclient import TestClient

    from dnntune.deploy._serve_app import create_app

    with TestClient(create_app(onnx, engine="onnxruntime")) as client:  # serve --engine onnxruntime: strings too
        r = client.post("/predict", json={"inputs": texts})
        assert r.status_code == 200 and r.json()["labels"] == torch_run.predict(texts).labels


def test_tune_from_the_default_text_space_and_its_report(text_csv, tmp_path, capsys):
    import yaml

    from dnntune.search import complete_experiment

    exp = complete_experiment({"data": data_section(text_csv)})
    assert exp["model"]["family"]["choice"] == ["embedding_bag", "textcnn", "rnn", "transformer"]
    assert set(exp["augment"]) == {"token_dropout", "token_mask"} and exp["data"]["vocab_size"] == 200  # as set
    searched = complete_experiment({"data": {"name": "text_csv", "path": str(text_csv)}})["data"]["vocab_size"]
    assert searched == {"choice": [4000, 8000, 16000]}  # searched where the data section leaves it open
    exp["train"]["epochs"] = 2
    exp["search"] = {"n_trials": 2, "sampler": "random", "pruner": "none"}
    exp["model"]["family"] = {"choice": ["embedding_bag", "textcnn"]}  # the fast ones
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["tune", str(path), "--out", str(tmp_path / "study"), "--quiet", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["trials"]["complete"] == 2 and "accuracy" in summary["test"]
    report = tmp_path / "study" / "report"
    assert (report / "index.html").is_file() and (report / "confusion.png").is_file()
    assert "warning" not in err.lower()
    assert (tmp_path / "study" / "best" / "tokenizer.json").is_file()


def test_text_regression_predicts_values(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 8, 120)
    rows = [(" ".join(["good"] * int(k) + ["meh"] * (8 - int(k))), str(int(k))) for k in counts]
    path = write_csv(tmp_path / "scores.csv", rows, header=("text", "score"))
    r = validate_recipe({"data": data_section(path, label="score", task="regression"),
                         "model": {"family": "embedding_bag", "buckets": 0}, "optim": {"lr": 0.03},
                         "train": {"epochs": 30}})
    res = train(r, out_dir=tmp_path / "run")
    assert res.metrics["test"]["r2"] > 0.9
    values = load_run(tmp_path / "run").predict(["good good good good good good meh meh"]).values
    assert abs(float(values[0]) - 6) < 0.5


def test_every_recipe_of_the_default_text_space_builds_and_runs(text_csv):
    import optuna

    from dnntune.models import build_model
    from dnntune.search import complete_experiment, suggest_recipe

    exp = complete_experiment({"data": data_section(text_csv)})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    spec = InputSpec("sequence", (16,), "toy", info={"vocab_size": 200, "pad_id": 0})
    families = set()
    for _ in range(24):
        recipe = validate_recipe(suggest_recipe(study.ask(), exp), "recipe")
        families.add(recipe.model.family)
        with torch.no_grad():
            out = build_model(recipe.model, spec, 3).eval()(torch.randint(0, 200, (2, 16)))
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        assert recipe.augment.token_dropout <= 0.2 and recipe.data.knobs.vocab_size == 200  # as the data says
    assert families == {"embedding_bag", "textcnn", "rnn", "transformer"}
