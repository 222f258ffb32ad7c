import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dnntune.cli import main
from dnntune.config import validate_recipe
from dnntune.errors import ConfigError
from dnntune.search import complete_experiment, grid_space, suggest_recipe, tune, validate_experiment
from dnntune.search.storage import open_storage
from dnntune.search.study import FAIL_REASON

optuna.logging.set_verbosity(optuna.logging.ERROR)
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def experiment(n_trials=4, epochs=3, **search):
    return {
        "seed": 0,
        "data": {"name": "iris"},
        "model": {"family": {"choice": ["mlp", "linear"]}, "mlp": {"width": {"int": [4, 32], "log": True},
                                                                 "depth": {"int": [1, 2]}}},
        "optim": {"name": {"choice": ["adam", "sgd"]}, "lr": {"float": [1e-3, 1e-1], "log": True},
                  "sgd": {"momentum": {"float": [0.5, 0.95]}}},
        "train": {"epochs": epochs, "batch_size": {"choice": [16, 32]}},
        "search": {"n_trials": n_trials, "seed": 0, **search},
    }


def trials_of(path: Path, name: str = "study"):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def enqueue(out_dir: Path, *trials: dict) -> None:
    """Pre-create the study ``tune`` continues, with these trials queued: they run first, in order."""
    study = optuna.create_study(study_name="study", storage=open_storage(None, out_dir), direction="maximize")
    for params in trials:
        study.enqueue_trial(params)


@pytest.fixture
def used(monkeypatch):
    """The (sampler, pruner) of every ``Study.ask``: what really picked the trials' parameters and pruned."""
    seen: list[tuple[object, object]] = []
    ask = optuna.Study.ask

    def spy(self, *args, **kwargs):
        seen.append((self.sampler, self.pruner))
        return ask(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "ask", spy)
    return seen


def replay(sampler, exp: dict, n: int) -> list[dict]:
    """The parameters ``sampler`` suggests for the first ``n`` trials of ``exp`` in a fresh study."""
    study = optuna.create_study(sampler=sampler, direction="maximize")
    params = []
    for _ in range(n):
        trial = study.ask()
        suggest_recipe(trial, exp)
        params.append(trial.params)
        study.tell(trial, 0.5)
    return params


# --- spaces -------------------------------------------------------------------------------------------


def test_conditional_space_resolves_only_the_chosen_options_knobs():
    exp = experiment()
    seen = set()
    for i in range(30):
        trial = optuna.trial.FixedTrial({"model.family": ["mlp", "linear"][i % 2], "model.mlp.width": 8,
                                         "model.mlp.depth": 1, "optim.name": ["adam", "sgd"][i // 2 % 2],
                                         "optim.lr": 0.01, "optim.sgd.momentum": 0.9, "train.batch_size": 16})
        raw = suggest_recipe(trial, exp)
        r = validate_recipe(raw)
        seen.add((r.model.family, r.optim.name))
        if r.model.family == "mlp":
            assert r.model.knobs.width == 8
        if r.optim.name == "sgd":
            assert r.optim.knobs.momentum == 0.9
        else:
            assert "momentum" not in raw["optim"]
    assert seen == {("mlp", "adam"), ("mlp", "sgd"), ("linear", "adam"), ("linear", "sgd")}


def test_space_errors_name_the_dimension():
    bad = experiment()
    bad["optim"]["lr"] = {"float": [0.1, 0.01]}
    with pytest.raises(ConfigError, match=r"optim.lr: low 0.1 is above high 0.01"):
        validate_experiment(bad)
    bad = experiment()
    bad["model"]["mlp"]["widht"] = {"int": [4, 8]}
    with pytest.raises(ConfigError, match=r"model.widht: unknown key.*model.family = 'mlp'"):
        validate_experiment(bad)
    bad = experiment()
    bad["optim"]["lr"] = {"float": [0, 1], "log": True}
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        validate_experiment(bad)


def test_grid_space_discretizes_numeric_dimensions():
    space = grid_space({"optim": {"lr": {"float": [1e-3, 1e-1], "log": True, "grid": 3}},
                        "train": {"batch_size": {"choice": [16, 32]}, "epochs": {"int": [1, 3]}}})
    assert space["optim.lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert space["train.batch_size"] == [16, 32] and space["train.epochs"] == [1, 2, 3]


@pytest.mark.parametrize("data", ["mnist1d", "digits", "wine", "diabetes"])
def test_default_space_is_valid_for_each_kind_of_data(data):
    exp = complete_experiment({"data": {"name": data, **({"num_samples": 200} if data == "mnist1d" else {})}})
    sample = validate_experiment(exp)
    assert sample.data.name == data
    assert {"model", "optim", "schedule", "train", "augment", "loss"} <= set(exp)


def test_tune_data_with_overrides_fills_the_default_space_then_applies_them(tmp_path):
    out = tmp_path / "run"
    code = main(["tune", "--data", "iris", "--set", "train.epochs=2", "--set", "search.pruner=none",
                 "--n-trials", "2", "--out", str(out), "--quiet", "--tracker", "none"])
    assert code == 0
    trials = trials_of(out / "study.journal", "iris-default")
    assert len(trials) == 2 and all(len(t.intermediate_values) == 2 for t in trials)
    assert any(k.startswith("model.") for k in trials[0].params)  # the default space is searched


# --- studies ------------------------------------------------------------------------------------------


def _seeded_random_draws(trials, exp):
    return [t.params for t in trials] == replay(optuna.samplers.RandomSampler(seed=0), exp, len(trials))


def _tpe_models_after_its_startup_trials(trials, exp):
    # the first 4 (n_startup_trials) are TPE's seeded random draws; the 5th comes from its model
    draws = replay(optuna.samplers.RandomSampler(seed=0), exp, len(trials))
    return [t.params for t in trials[:4]] == draws[:4] and trials[4].params != draws[4]


def _covers_the_grid_once(trials, exp):
    points = sorted((t.params["optim.lr"], t.params["train.batch_size"]) for t in trials)
    return points == sorted((lr, b) for lr in (1e-3, 1e-1) for b in (16, 32))


def _cma_es_samples_the_numbers(trials, exp):
    # CMA-ES tags the trials it sampled with its generation (the first is an independent draw)
    return all("cma:generation" in t.system_attrs for t in trials[1:])


@pytest.mark.parametrize("sampler, n_trials, cls, effect", [
    pytest.param("tpe", 5, optuna.samplers.TPESampler, _tpe_models_after_its_startup_trials, id="tpe"),
    pytest.param("random", 3, optuna.samplers.RandomSampler, _seeded_random_draws, id="random"),
    # a grid of 4 points: the study stops there, below its 6-trial budget
    pytest.param("grid", 6, optuna.samplers.GridSampler, _covers_the_grid_once, id="grid"),
    # GP's first 10 trials are its independent sampler's: seeded random draws
    pytest.param("gp", 3, optuna.samplers.GPSampler, _seeded_random_draws, id="gp"),
    pytest.param("cmaes", 3, optuna.samplers.CmaEsSampler, _cma_es_samples_the_numbers, id="cmaes"),
])
def test_every_sampler_is_the_one_named_and_drives_the_trials(tmp_path, used, sampler, n_trials, cls, effect):
    exp = experiment(n_trials=n_trials, epochs=2, sampler=sampler, pruner="none")
    if sampler == "grid":
        exp["model"] = {"family": "mlp", "width": 8}
        exp["optim"] = {"name": "adam", "lr": {"float": [1e-3, 1e-1], "log": True, "grid": 2}}
    if sampler == "cmaes":  # CMA-ES samples numbers; choices fall back to independent sampling
        exp["model"] = {"family": "mlp", "width": {"int": [4, 32]}}
    summary = tune(exp, tmp_path, quiet=True)
    assert used and all(type(s) is cls for s, _ in used), {type(s).__name__ for s, _ in used}
    trials = trials_of(tmp_path / "study.journal")
    assert summary["trials"]["complete"] == len(trials) == min(n_trials, 4 if sampler == "grid" else n_trials)
    assert effect(trials, exp), [t.params for t in trials]
    assert summary["test"]["accuracy"] > 0.5 and (tmp_path / "best" / "model.safetensors").exists()


def test_tuning_without_a_validation_split_is_refused_unless_cross_validated(tmp_path, capsys):
    code = main(["tune", "--data", "iris", "--set", "data.val_fraction=0", "--out", str(tmp_path), "--quiet"])
    assert code == 2 and "data.val_fraction: 0 leaves no validation split" in capsys.readouterr().err
    assert not (tmp_path / "study.journal").exists()


@pytest.mark.parametrize("final", ["retrain", "best_trial"])
def test_cross_validated_trials_average_their_folds(tmp_path, final):
    exp = experiment(n_trials=2, epochs=3, pruner="none", folds=3, final=final)
    summary = tune(exp, tmp_path, quiet=True)
    assert summary["trials"]["complete"] == 2 and summary["test"]["accuracy"] > 0.5
    for t in trials_of(tmp_path / "study.journal"):
        folds = t.user_attrs["folds"]
        assert len(folds) == 3 and t.value == pytest.approx(sum(folds) / 3)
        assert t.user_attrs["val"]["accuracy"] == pytest.approx(t.value)
        assert t.user_attrs["epochs"] == 9 and len(t.intermediate_values) == 3  # pruning sees the first fold
        trial_dir = Path(t.user_attrs["dir"])
        assert all((trial_dir / f / "curves.jsonl").exists() for f in ("", "fold1", "fold2"))
    assert (tmp_path / "best" / "model.safetensors").exists()
    assert "mean over 3 cross-validation folds" in (tmp_path / "report" / "index.html").read_text()


GOOD, HOPELESS = 0.05, 1e-9  # adam lrs: learns iris within an epoch / never moves from the initial weights


@pytest.mark.parametrize("pruner, cls, lrs, pruned_at", [
    # five trials complete before the median pruner judges (a hopeless one among them is not pruned);
    # every hopeless trial after them is pruned at the first epoch it may be (n_warmup_steps = 1)
    pytest.param("median", optuna.pruners.MedianPruner,
                 [GOOD, GOOD, HOPELESS, GOOD, GOOD, GOOD, HOPELESS, HOPELESS], {6: 1, 7: 1}, id="median"),
    # successive halving: a rung at every epoch 1, 3, 9...; the first rung drops what is below the best
    pytest.param("asha", optuna.pruners.SuccessiveHalvingPruner, [GOOD, HOPELESS, HOPELESS], {1: 1, 2: 1},
                 id="asha"),
    # hyperband: trials 0, 1, 4 of a study named "study" fall in bracket 0 (rungs at epochs 1, 3), trials
    # 2, 3 in bracket 1 (first rung at epoch 3), each judged only against its own bracket
    pytest.param("hyperband", optuna.pruners.HyperbandPruner, [GOOD, GOOD, GOOD, HOPELESS, HOPELESS],
                 {3: 3, 4: 1}, id="hyperband"),
])
def test_pruning_really_prunes_a_hopeless_trial(tmp_path, used, pruner, cls, lrs, pruned_at):
    exp = experiment(n_trials=len(lrs), epochs=4, pruner=pruner)
    exp["model"] = {"family": "mlp", "width": 16}
    exp["optim"] = {"name": "adam", "lr": {"float": [1e-9, 0.1], "log": True}}
    exp["train"]["batch_size"] = 16
    enqueue(tmp_path, *({"optim.lr": lr} for lr in lrs))
    summary = tune(exp, tmp_path, quiet=True)
    assert used and all(type(p) is cls for _, p in used), {type(p).__name__ for _, p in used}
    trials = trials_of(tmp_path / "study.journal")
    assert [t.params["optim.lr"] for t in trials] == lrs  # the constructed trials ran, in order
    assert {t.number: len(t.intermediate_values) for t in trials if t.state == TrialState.PRUNED} == pruned_at
    assert all(t.state == TrialState.COMPLETE and len(t.intermediate_values) == 4
               for t in trials if t.number not in pruned_at)
    for t in trials:  # pruned trials keep their curves, up to the epoch they were stopped at
        curves = Path(t.user_attrs["dir"]) / "curves.jsonl"
        assert len(curves.read_text().splitlines()) == len(t.intermediate_values)
    assert summary["trials"] == {"complete": len(lrs) - len(pruned_at), "pruned": len(pruned_at), "fail": 0}
    assert summary["best"]["params"]["optim.lr"] == GOOD


def test_failing_trials_are_recorded_with_reasons_and_the_study_goes_on(tmp_path):
    exp = experiment(n_trials=4, pruner="none")
    exp["optim"] = {"name": "sgd", "lr": {"float": [1e-3, 1e13], "log": True}}
    exp["model"] = {"family": "mlp", "width": 8}
    exp["train"]["batch_size"] = 16
    enqueue(tmp_path, *({"optim.lr": lr} for lr in (0.05, 1e12, 0.05, 0.02)))  # the second one diverges
    summary = tune(exp, tmp_path, quiet=True)
    trials = trials_of(tmp_path / "study.journal")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                         TrialState.COMPLETE]
    assert trials[1].params["optim.lr"] == 1e12
    assert trials[1].user_attrs[FAIL_REASON].startswith("diverged (NaN/inf loss) at epoch ")
    assert all(FAIL_REASON not in t.user_attrs for t in trials if t.number != 1)
    assert summary["trials"] == {"complete": 3, "pruned": 0, "fail": 1} and summary["best"]["trial"] != 1


def test_consecutive_failures_stop_the_study_with_the_common_reason(tmp_path, capsys):
    exp = experiment(n_trials=20, pruner="none", max_consecutive_failures=3)
    exp["optim"] = {"name": "sgd", "lr": 1e12}
    exp["model"] = {"family": "mlp", "width": 8}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    code = main(["tune", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "3 consecutive failed trials" in err and "diverged" in err
    assert len(trials_of(tmp_path / "run" / "study.journal", "exp")) == 3


def test_rerun_continues_the_study_and_a_changed_space_is_refused(tmp_path):
    tune(experiment(n_trials=2), tmp_path, quiet=True)
    summary = tune(experiment(n_trials=4), tmp_path, quiet=True)
    assert sum(summary["trials"].values()) == 4
    changed = experiment(n_trials=5)
    changed["optim"]["lr"] = {"float": [1e-4, 1e-1], "log": True}
    with pytest.raises(ConfigError, match="different experiment"):
        tune(changed, tmp_path, quiet=True)


def test_multi_objective_study_has_a_pareto_front(tmp_path):
    exp = experiment(n_trials=4, sampler="nsga2", objectives=["accuracy", "params"])
    summary = tune(exp, tmp_path, quiet=True)
    assert summary["objectives"] == {"accuracy": "maximize", "params": "minimize"}
    trials = [t for t in trials_of(tmp_path / "study.journal") if t.state == TrialState.COMPLETE]

    def dominates(a, b):  # higher accuracy, fewer parameters
        return a.values[0] >= b.values[0] and a.values[1] <= b.values[1] and a.values != b.values

    front = {t.number for t in trials if not any(dominates(o, t) for o in trials)}
    assert {p["trial"] for p in summary["pareto_front"]} == front and len(trials) == 4
    assert summary["best"]["trial"] in front and summary["test"]["accuracy"] > 0.5


def test_timeout_and_epoch_budget_stop_cleanly(tmp_path):
    exp = experiment(n_trials=None, epochs=3)
    exp["search"]["epoch_budget"] = 7
    summary = tune(exp, tmp_path / "epochs", quiet=True)
    assert sum(summary["trials"].values()) == 3  # 3 + 3 epochs < 7, the third trial crosses it
    exp = experiment(n_trials=None, epochs=3)
    exp["search"]["timeout"] = 3
    t0, started = time.time(), datetime.datetime.now()
    summary = tune(exp, tmp_path / "time", quiet=True)
    assert time.time() - t0 < 30 and summary["test"]["accuracy"] > 0.5
    trials = trials_of(tmp_path / "time" / "study.journal")
    late = [t.number for t in trials if t.datetime_start > started + datetime.timedelta(seconds=3.5)]
    assert trials and not late, f"trials {late} started after the 3 s timeout"


def test_stock_optuna_loads_the_study_and_best_round_trips_into_train(tmp_path, capsys):
    exp_path = tmp_path / "exp.yaml"
    exp_path.write_text(yaml.safe_dump(experiment(n_trials=3)))
    assert main(["tune", str(exp_path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    journal = tmp_path / "run" / "study.journal"
    # the stock optuna API and CLI read our embedded storage
    trials = trials_of(journal, "exp")
    assert len(trials) == 3
    optuna_cli = str(Path(sys.executable).parent / "optuna")
    res = subprocess.run([optuna_cli, "trials", "--study-name", "exp", "--storage",
                          str(journal), "-f", "json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) == 3
    capsys.readouterr()
    best = tmp_path / "best.yaml"
    assert main(["best", "--storage", str(journal), "--study", "exp", "--out", str(best)]) == 0
    assert main(["train", str(best), "--out", str(tmp_path / "retrain"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) >= {"best", "trials", "test", "wall_seconds"}
    best_trial = trials[summary["best"]["trial"]]  # the summary names a trial optuna has, with its params
    assert best_trial.state == TrialState.COMPLETE and summary["best"]["params"] == best_trial.params
    assert best_trial.value == max(t.value for t in trials if t.state == TrialState.COMPLETE)
    written = yaml.safe_load(best.read_text())  # `dnntune best` wrote that trial's recipe ...
    assert written["optim"]["name"] == best_trial.params["optim.name"]
    assert written["optim"]["lr"] == pytest.approx(best_trial.params["optim.lr"])
    assert written["model"]["family"] == best_trial.params["model.family"]
    retrained = yaml.safe_load((tmp_path / "retrain" / "recipe.yaml").read_text())  # ... which `train` ran
    assert retrained["optim"] == written["optim"] and retrained["model"] == written["model"]


def test_optuna_dashboard_reads_the_embedded_study(tmp_path):
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    from dnntune.search.storage import open_storage

    tune(experiment(n_trials=2), tmp_path, study_name="dash", quiet=True)
    app = wsgi(open_storage(str(tmp_path / "study.journal")))

    def get(path):
        env: dict = {}
        setup_testing_defaults(env)
        env["PATH_INFO"] = path
        status = []
        body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
        return status[0], json.loads(body)

    status, studies = get("/api/studies")
    assert status == "200 OK" and studies["study_summaries"][0]["study_name"] == "dash"
    status, study = get(f"/api/studies/{studies['study_summaries'][0]['study_id']}")
    assert status == "200 OK" and len(study["trials"]) == 2


def test_best_on_a_missing_study_is_a_clear_error(tmp_path, capsys):
    exp_path = tmp_path / "exp.yaml"
    exp_path.write_text(yaml.safe_dump(experiment(n_trials=1)))
    main(["tune", str(exp_path), "--out", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    code = main(["best", "--storage", str(tmp_path / "run" / "study.journal"), "--study", "nope"])
    assert code == 2 and "no study named 'nope'" in capsys.readouterr().err


# --- parallel workers and crash safety ----------------------------------------------------------------


def _run_two_workers(tmp_path: Path, storage_url: str | None, study: str) -> list:
    exp = experiment(n_trials=6, epochs=3)
    exp["search"]["workers"] = 2
    tune(exp, tmp_path, storage_url=storage_url, study_name=study, quiet=True)
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def test_two_workers_on_the_embedded_storage(tmp_path):
    trials = _run_two_workers(tmp_path, None, "two")
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(numbers))) and 6 <= len(numbers) <= 7
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    owners = {t.system_attrs["dnntune:owner"]["pid"] for t in trials}
    assert len(owners) == 2  # both worker processes ran trials
    logs = "".join(p.read_text() for p in (tmp_path / "workers").glob("*.log"))
    assert "database is locked" not in logs


def _postgres_available() -> bool:
    try:
        import sqlalchemy

        sqlalchemy.create_engine(PG_URL).connect().close()
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _postgres_available(), reason="PostgreSQL on 127.0.0.1:5432 not reachable")
def test_two_workers_on_postgresql(tmp_path):
    name = f"dnntune-test-{uuid.uuid4().hex[:8]}"
    try:
        trials = _run_two_workers(tmp_path, PG_URL, name)
        numbers = [t.number for t in trials]
        assert numbers == list(range(len(numbers))) and 6 <= len(numbers) <= 7
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_sigkill_then_resume_loses_no_completed_trial(tmp_path):
    exp = experiment(n_trials=5, epochs=40, pruner="none")
    exp["model"] = {"family": "mlp", "width": 32}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dnntune", "tune", str(path), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    journal = out / "study.journal"
    deadline = time.time() + 120
    killed_running = None
    while time.time() < deadline:
        time.sleep(0.2)
        if not journal.exists():
            continue
        trials = trials_of(journal, "exp")
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(done) >= 2 and running:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed_running = running[0].number
            break
    assert killed_running is not None, "the study never had 2 complete and 1 running trial"
    before = {t.number: t.values for t in trials_of(journal, "exp") if t.state == TrialState.COMPLETE}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = trials_of(journal, "exp")
    for number, values in before.items():  # no completed trial lost or changed
        assert after[number].state == TrialState.COMPLETE and after[number].values == values
    assert after[killed_running].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed_running]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # the re-run repeats the killed trial's suggestions (a kill during suggestion leaves only some)
    assert retries[0].params.items() >= after[killed_running].params.items()
    assert sum(t.state == TrialState.COMPLETE for t in after) == 5


def test_ctrl_c_records_the_running_trial_and_a_rerun_repeats_it(tmp_path):
    exp = experiment(n_trials=4, epochs=40, pruner="none")
    exp["model"] = {"family": "mlp", "width": 32}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dnntune", "tune", str(path), "--out", str(out), "--quiet"]
    # a shell that starts jobs in the background (as CI does) ignores SIGINT in them, and children inherit
    # that; a user's terminal does not, so the child gets Python's default Ctrl-C handling back
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    journal = out / "study.journal"
    deadline = time.time() + 120
    caught = False
    while not caught and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if journal.exists():
            trials = trials_of(journal, "exp")
            caught = any(t.state == TrialState.COMPLETE for t in trials) and any(
                t.state == TrialState.RUNNING and t.params for t in trials)
    assert caught, "never saw a complete trial and a running one"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    interrupted = [t for t in trials_of(journal, "exp") if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs[FAIL_REASON].startswith("interrupted")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = trials_of(journal, "exp")
    rerun = [t for t in after if t.user_attrs.get("requeued_from") == interrupted[0].number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in after) == 4


def interrupted_trial(tmp_path, monkeypatch, fit):
    """Run a study whose trials train with ``fit``; it must stop on Ctrl-C with its one trial interrupted."""
    from dnntune.search import interrupt, objective

    monkeypatch.setattr(objective, "fit_tracked", fit)
    monkeypatch.setattr(interrupt, "_CTRL_C", interrupt.threading.Event())
    with pytest.raises(KeyboardInterrupt):
        tune(experiment(n_trials=3, epochs=3, pruner="none"), tmp_path, quiet=True)
    (trial,) = trials_of(tmp_path / "study.journal")
    assert trial.state == TrialState.FAIL and trial.user_attrs[FAIL_REASON].startswith("interrupted")
    return trial


def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_study_at_the_next_epoch(tmp_path, monkeypatch):
    from dnntune.search import interrupt, objective

    class Finalizer:  # Python prints "Exception ignored in ..." and drops a KeyboardInterrupt raised here
        def __del__(self):
            interrupt._on_sigint(signal.SIGINT, None)

    fit = objective.fit_tracked

    def fit_then_lose_a_ctrl_c(trainer, tracker):
        (reporter,) = [cb for cb in trainer.callbacks if isinstance(cb, objective.TrialReporter)]
        report = reporter.on_epoch_end

        def reporter_losing_ctrl_c(trainer, epoch, row):
            if row["epoch"] == 1:
                Finalizer()  # the interrupt raised in __del__ is swallowed by the interpreter
            return report(trainer, epoch, row)

        reporter.on_epoch_end = reporter_losing_ctrl_c
        return fit(trainer, tracker)

    trial = interrupted_trial(tmp_path, monkeypatch, fit_then_lose_a_ctrl_c)
    assert list(trial.intermediate_values) == []  # stopped at the first epoch's report, before reporting it


def test_an_error_caused_by_a_ctrl_c_is_recorded_as_the_interrupt(tmp_path, monkeypatch):
    from dnntune.search import interrupt

    def interrupted_mid_write(trainer, tracker):
        interrupt._CTRL_C.set()  # the handler ran; the KeyboardInterrupt broke the journal's file lock
        raise FileNotFoundError("study.journal.lock...rename")

    interrupted_trial(tmp_path, monkeypatch, interrupted_mid_write)


def test_the_best_trial_among_equal_values_has_the_lower_validation_log_loss():
    from dnntune.search.selection import best_trial

    study = optuna.create_study(direction="maximize")
    for loss in (0.30, 0.10, 0.20):  # all at 100% validation accuracy
        t = study.ask()
        t.set_user_attr("val", {"accuracy": 1.0, "log_loss": loss})
        study.tell(t, 1.0)
    assert best_trial(study, ["maximize"]).number == 1


def test_a_grid_too_large_to_enumerate_is_refused_with_its_size():
    from dnntune.search import default_experiment
    from dnntune.search.factories import make_sampler

    exp = default_experiment({"name": "mnist1d"}, "signal", "classification")
    with pytest.raises(ConfigError, match=r"grid over this space has .* points \(more than 100,000"):
        make_sampler("grid", exp, 0, 1, None)
