import base64
import datetime
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from PIL import Image

from dnntune.cli import main
from dnntune.report import ReportError, build_report, write_report
from dnntune.search import tune
from dnntune.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
SECTIONS = ("summary", "history", "importance", "parallel", "slices", "curves", "timeline", "top", "failed",
            "recipe", "test", "ablation")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


SPACE = {"model.family": CategoricalDistribution(["mlp", "linear"]),
         "optim.lr": FloatDistribution(1e-4, 1e-1, log=True)}


def synthetic_study(run_dir: Path, n_trials: int, multi: bool = False, failed_only: bool = False) -> optuna.Study:
    """A journal study in ``run_dir`` shaped like one of ``dnntune tune`` (no training): complete, pruned and
    failed trials with curves, two worker processes, a final test."""
    run_dir.mkdir(parents=True, exist_ok=True)
    names, directions = (["accuracy", "params"], ["maximize", "minimize"]) if multi else (["accuracy"], ["maximize"])
    study = optuna.create_study(study_name="synthetic", storage=open_storage(None, run_dir), directions=directions)
    study.set_user_attr("dnntune:experiment", {"data": {"name": "synthetic"},
                                                "search": {"sampler": "tpe", "pruner": "asha"}})
    study.set_user_attr("dnntune:objectives", names)
    study.set_user_attr("dnntune:directions", directions)
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    for n in range(n_trials):
        params = {"model.family": ["mlp", "linear"][n % 2], "optim.lr": 10 ** (-4 + 3 * n / max(n_trials - 1, 1))}
        state = TrialState.FAIL if failed_only or n % 7 == 6 else TrialState.PRUNED if n % 3 == 2 else \
            TrialState.COMPLETE
        epochs = {TrialState.COMPLETE: 6, TrialState.PRUNED: 3, TrialState.FAIL: 2}[state]
        curve = {e: 0.5 + 0.4 * (1 - 0.6 ** e) * (1 - abs(n / n_trials - 0.6)) for e in range(1, epochs + 1)}
        n_params = 100 + 37 * n
        attrs = {"epochs": epochs, "best_epoch": epochs, "params": n_params, "wall_seconds": 0.4 * epochs,
                 "val": {"accuracy": curve[epochs]},
                 "recipe": {"seed": 0, "data": {"name": "synthetic"}, "model": {"family": params["model.family"]},
                            "optim": {"name": "adam", "lr": params["optim.lr"]}}}
        if state == TrialState.FAIL:
            attrs["fail_reason"] = ("diverged (NaN/inf loss) at epoch 2" if n % 3 else
                                    "out of memory: CUDA out of memory")
        values = None
        if state == TrialState.COMPLETE:
            values = [curve[epochs], float(n_params)] if multi else [curve[epochs]]
        elif state == TrialState.PRUNED and not multi:
            values = [curve[epochs]]
        t = optuna.trial.create_trial(state=state, values=values, params=params, distributions=SPACE,
                                      user_attrs=attrs, system_attrs={"dnntune:owner": {"host": "test", "pid": n % 2}},
                                      intermediate_values={} if multi else curve)
        t.datetime_start = start + datetime.timedelta(seconds=2 * (n // 2))
        t.datetime_complete = t.datetime_start + datetime.timedelta(seconds=attrs["wall_seconds"])
        study.add_trial(t)
    if not failed_only:
        (run_dir / "best").mkdir(exist_ok=True)
        cm = [[9 if i == j else 1 for j in range(3)] for i in range(3)]
        (run_dir / "best" / "summary.json").write_text(json.dumps({"metrics": {"test": {
            "accuracy": 0.9, "f1_macro": 0.9, "confusion_matrix": cm}}}))
        (run_dir / "summary.json").write_text(json.dumps({"study": "synthetic", "wall_seconds": 60.0,
                                                          "storage": str(run_dir / "study.journal")}))
    return study


def experiment(n_trials=10, epochs=2):
    # conditional space (mlp knobs only when family is mlp); no pruning, so every trial completes
    return {
        "seed": 0,
        "data": {"name": "iris"},
        "model": {"family": {"choice": ["mlp", "linear"]}, "mlp": {"width": {"int": [4, 32], "log": True}}},
        "optim": {"name": "adam", "lr": {"float": [1e-3, 1e-1], "log": True}},
        "train": {"epochs": epochs, "batch_size": {"choice": [16, 32]}},
        "search": {"n_trials": n_trials, "seed": 0, "pruner": "none", "sampler": "random"},
    }


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """One real tiny study, shared by the xdist workers (the first one runs it, the other waits)."""
    import fcntl

    root = tmp_path_factory.getbasetemp().parent
    out = root / "report-study"
    with open(root / "report-study.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "report" / "index.html").is_file():
            shutil.rmtree(out, ignore_errors=True)
            summary = tune(experiment(), out, study_name="iris-report", quiet=True)
            assert summary["report"] == str(out / "report" / "index.html")
    return out


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_tune_writes_a_self_contained_report_with_every_section(run_dir):
    html = (run_dir / "report" / "index.html").read_text()
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html
    assert "Not shown" not in html  # 10 complete trials: importance too
    pngs = images(html)
    names = {"history", "importance", "parallel", "slices", "curves", "timeline", "confusion"}
    assert len(pngs) == len(names)
    for data in pngs:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 100
    assert {p.stem for p in (run_dir / "report").glob("*.png")} == names
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    assert "family: " in html and "test confusion matrix" in html  # best recipe YAML, final test
    assert "iris-report" in html


def test_report_command_rebuilds_from_the_run_folder_or_the_storage(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir), "--json", "--out", str(tmp_path / "a")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["path"] == str(tmp_path / "a" / "index.html") and out["problem"] is None and not out["missing"]
    assert main(["report", "--storage", str(run_dir / "study.journal"), "--study", "iris-report", "--quiet",
                 "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and (tmp_path / "b" / "index.html").is_file()


def test_ablating_a_run_folder_puts_the_ablation_into_its_report(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert "No ablation yet" in (run / "report" / "index.html").read_text()
    assert main(["ablate", str(run), "--seeds", "2", "--workers", "1", "--set", "train.epochs=2", "--quiet"]) == 0
    assert (run / "ablation" / "ablation.json").is_file()
    html = (run / "report" / "index.html").read_text()
    section = html.split('<section id="ablation">')[1].split("</section>")[0]
    assert "Cumulative" in section and "Leave-one-out" in section and "baseline" in section
    assert len(images(section)) == 1  # the bar chart with error bars


# --- bad input ------------------------------------------------------------------------------------------


def test_a_missing_run_folder_or_study_or_storage_is_a_clear_error(run_dir, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not the run folder of `dnntune tune`" in capsys.readouterr().err
    assert main(["report", "--storage", str(run_dir / "study.journal"), "--study", "other"]) == 2
    err = capsys.readouterr().err
    assert "no study named 'other'" in err and "iris-report" in err and "Traceback" not in err
    assert main(["report", "--storage", str(tmp_path / "x.journal"), "--study", "s"]) == 2
    assert "no such journal file" in capsys.readouterr().err
    assert not (tmp_path / "x.journal").exists()  # looking did not create it


def test_an_empty_study_is_a_clear_error_without_a_report(tmp_path, capsys):
    optuna.create_study(study_name="empty", storage=open_storage(None, tmp_path))
    assert main(["report", str(tmp_path)]) == 2
    assert "has no trials yet" in capsys.readouterr().err
    assert not (tmp_path / "report" / "index.html").exists()
    with pytest.raises(ReportError, match="no trials"):
        write_report(tmp_path)


def test_only_failed_trials_give_a_partial_report_with_the_reasons(tmp_path, capsys):
    synthetic_study(tmp_path, n_trials=6, failed_only=True)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no trial of study 'synthetic' completed: 6 failed" in err and "partial report" in err
    html = (tmp_path / "report" / "index.html").read_text()
    assert "6 failed trial(s), by reason" in html and "diverged (NaN/inf loss)" in html
    assert 'class="missing"' in html and "no complete trial" in html
    assert images(html)  # the timeline is still drawn


def test_multi_objective_study_has_a_pareto_front_and_too_small_studies_say_why(tmp_path):
    synthetic_study(tmp_path / "multi", n_trials=16, multi=True)
    report = write_report(tmp_path / "multi")
    assert report.problem is None and (tmp_path / "multi" / "report" / "pareto.png").is_file()
    assert "Pareto front" in report.path.read_text()
    small = optuna.create_study()
    small.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("k", 1, 3), n_trials=4)
    report = build_report(small, tmp_path / "small")
    assert "at least 10 complete trials" in report.missing["importance"]
    assert "no run folder" in report.missing["test"]


def test_a_failing_report_warns_and_keeps_the_study_and_summary(tmp_path, monkeypatch, capsys):
    import dnntune.report

    def broken(*args, **kwargs):
        raise RuntimeError("no figures today")

    monkeypatch.setattr(dnntune.report, "build_report", broken)
    summary = tune(experiment(n_trials=2, epochs=2), tmp_path, quiet=True)
    assert "report" not in summary and (tmp_path / "summary.json").is_file()
    assert "the report could not be written (RuntimeError: no figures today)" in capsys.readouterr().err
    storage = open_storage(str(tmp_path / "study.journal"))
    trials = optuna.load_study(study_name="study", storage=storage).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2


# --- headless Chromium: the page renders, every image decodes, no console errors ---------------------------


def render(html: Path, screenshot: Path, tmp: Path) -> dict:
    """Open ``html`` in headless Chromium; return the page's check attributes and console messages."""
    profile = tmp / f"profile-{html.stem}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars", "--enable-logging=stderr",
           "--v=0", f"--screenshot={screenshot}", "--window-size=1280,4000", "--dump-dom", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    root = re.search(r"<html[^>]*>", proc.stdout)
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', root.group(0))) if root else {}
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return {"attrs": attrs, "console": console, "returncode": proc.returncode}


def problems(result: dict) -> list[str]:
    a = result["attrs"]
    found = []
    if a.get("data-checked") != "1":
        found.append("the page's load check did not run")
    if a.get("data-broken-images"):
        found.append(f"broken images: {a['data-broken-images']}")
    if a.get("data-errors"):
        found.append(f"page errors: {a['data-errors']}")
    found += [f"console: {line}" for line in result["console"]]
    return found


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package `chromium`; `make test` "
                                              "installs it when run as root)")
def test_the_report_renders_in_headless_chromium_without_errors(run_dir, tmp_path):
    page = run_dir / "report" / "index.html"
    shot = Path(os.environ.get("DNNTUNE_SCREENSHOT", tmp_path / "report.png"))
    result = render(page, shot, tmp_path)
    assert problems(result) == [], result
    assert int(result["attrs"]["data-images"]) == 7
    with Image.open(shot) as im:
        assert im.size == (1280, 4000)
        colors = im.convert("RGB").resize((64, 200)).getcolors(64 * 200)
        assert colors is None or len(colors) > 20  # something was drawn, not a blank page

    # the check really fails: an image pointing to a missing file; an undecodable image and a console error
    html = page.read_text()
    uris = re.findall(r'src="(data:image/png;base64,[^"]+)"', html)
    missing = tmp_path / "missing.html"
    missing.write_text(html.replace(uris[0], "nowhere.png", 1))
    corrupt = tmp_path / "corrupt.html"
    corrupt.write_text(html.replace(uris[1], uris[1].replace("iVBORw0KGgo", "AAAAAAAAAAA", 1), 1)  # PNG signature
                       .replace("</body>", "<script>console.error('boom')</script></body>"))
    found = problems(render(missing, tmp_path / "missing.png", tmp_path))
    assert found and "broken images: optimization history" in found[0]
    found = problems(render(corrupt, tmp_path / "corrupt.png", tmp_path))
    assert any("broken images: parameter importance" in f for f in found)
    assert any("console:" in f and "boom" in f for f in found)
