"""Faults of issue 8 §6: each constructed deterministically, each test fails when its behaviour breaks."""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from dnntune import cli
from dnntune.engine import checkpoint as ckpt
from dnntune.engine.checkpoint import load_checkpoint, load_resumable, save_checkpoint, write_run_files
from dnntune.engine.runfolder import prepare_out_dir
from dnntune.errors import CheckpointWriteFailed, OutDirUnwritable, RunFolderIncomplete, UserError
from tests.conftest import tiny, write_recipe

KEYS = ("epoch", "model", "history")


def _state(value: float, epoch: int, n: int = 1000) -> dict:
    return {"epoch": epoch, "model": {"w": torch.full((n,), float(value))}, "history": [{"epoch": epoch + 1}]}


def _train_recipe(tmp_path: Path, **train) -> Path:
    return write_recipe(tmp_path / "r.yaml", tiny(train={"epochs": 3, "batch_size": 16, **train}))


def _curves(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]


def _child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


# ======================================================================================================
# Unreadable checkpoint (issue 8 §6.1): moved aside with one warning; resume from the previous one or fresh
# ======================================================================================================

def test_save_checkpoint_keeps_the_checkpoint_it_replaces_as_prev(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for epoch in range(3):
        save_checkpoint(path, _state(epoch, epoch))
    assert load_checkpoint(path)["epoch"] == 2
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no temp files


class _RunsCode:
    """Pickles to a call of Path.touch: code that would run if a checkpoint were loaded without weights_only."""

    def __reduce__(self):
        return (Path.touch, (Path(tempfile.gettempdir()) / "dnntune-faults-pwned",))


def _foreign_pickle() -> bytes:
    return pickle.dumps(_RunsCode())


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


UNREADABLE = {
    "truncated": lambda good: good[: len(good) // 2],  # a full disk
    "empty": lambda good: b"",
    "text": lambda good: b"not a checkpoint\n",
    "foreign pickle": lambda good: _foreign_pickle(),
    "not a dict": lambda good: _torch_bytes([1, 2, 3]),
    "missing keys": lambda good: _torch_bytes({"epoch": 5}),
}


@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_an_unreadable_checkpoint_is_moved_aside_and_the_previous_one_resumes(tmp_path, kind):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(1, 0))
    save_checkpoint(path, _state(2, 1))
    bad = UNREADABLE[kind](path.read_bytes())
    path.write_bytes(bad)
    said = []
    state = load_resumable(path, KEYS, warn=said.append)
    assert state is not None and state["epoch"] == 0 and bool((state["model"]["w"] == 1).all())
    assert (tmp_path / "checkpoint.pt.corrupt").read_bytes() == bad and not path.exists()
    assert len(said) == 1 and "\n" not in said[0]
    assert "checkpoint.pt is unreadable" in said[0] and "moved to checkpoint.pt.corrupt" in said[0]
    assert "resuming from checkpoint.prev.pt (epoch 1)" in said[0]


def test_a_foreign_pickle_runs_no_code_when_loaded(tmp_path):
    marker = Path(tempfile.gettempdir()) / "dnntune-faults-pwned"
    marker.unlink(missing_ok=True)
    (tmp_path / "checkpoint.pt").write_bytes(_foreign_pickle())
    assert load_resumable(tmp_path / "checkpoint.pt", KEYS, warn=lambda m: None) is None
    assert not marker.exists()  # loaded with weights_only=True: the pickle's code never ran
    assert (tmp_path / "checkpoint.pt.corrupt").exists()


def test_with_no_loadable_checkpoint_training_starts_fresh(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"junk")
    said = []
    assert load_resumable(path, KEYS, warn=said.append) is None
    assert (tmp_path / "checkpoint.pt.corrupt").read_bytes() == b""
    assert (tmp_path / "checkpoint.prev.pt.corrupt").read_bytes() == b"junk"
    assert len(said) == 1 and said[0].endswith("training starts fresh")
    assert "checkpoint.pt is unreadable" in said[0] and "checkpoint.prev.pt is unreadable" in said[0]


def test_a_good_or_absent_checkpoint_loads_without_a_word(tmp_path):
    said = []
    assert load_resumable(tmp_path / "checkpoint.pt", KEYS, warn=said.append) is None
    save_checkpoint(tmp_path / "checkpoint.pt", _state(1, 0))
    assert load_resumable(tmp_path / "checkpoint.pt", KEYS, warn=said.append)["epoch"] == 0
    assert said == []


def test_moving_aside_never_overwrites_an_older_corrupt_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    (tmp_path / "checkpoint.pt.corrupt").write_bytes(b"first")
    (tmp_path / "checkpoint.pt.corrupt.1").write_bytes(b"second")
    path.write_bytes(b"third")
    said = []
    assert load_resumable(path, KEYS, warn=said.append) is None
    assert [(tmp_path / f"checkpoint.pt.corrupt{s}").read_bytes() for s in ("", ".1", ".2")] == [
        b"first", b"second", b"third"]
    assert "moved to checkpoint.pt.corrupt.2" in said[0]


def test_train_resumes_from_the_previous_checkpoint_when_the_last_is_truncated(tmp_path, capsys):
    recipe, out = _train_recipe(tmp_path, checkpoint_every=0), tmp_path / "run"
    assert cli.main(["train", str(recipe), "--out", str(out), "--quiet"]) == 0
    prev = load_checkpoint(out / "checkpoint.prev.pt")
    assert prev["epoch"] == 1  # after epoch 2 of 3
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[: len(good) // 2])  # a full disk cut it short
    capsys.readouterr()
    assert cli.main(["train", str(recipe), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "moved to checkpoint.pt.corrupt" in err and "resuming from checkpoint.prev.pt" in err
    assert (out / "checkpoint.pt.corrupt").read_bytes() == good[: len(good) // 2]
    rows = _curves(out)
    assert len(rows) == 3 and json.loads((out / "summary.json").read_text())["epochs"] == 3
    assert [r["seconds"] for r in rows[:2]] == [h["seconds"] for h in prev["history"]]  # not retrained


def test_train_with_a_foreign_checkpoint_starts_fresh_and_keeps_older_corrupt_files(tmp_path, capsys):
    recipe, out = _train_recipe(tmp_path), tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_text("<html>not a checkpoint</html>\n")
    (out / "checkpoint.pt.corrupt").write_bytes(b"an older one")
    assert cli.main(["train", str(recipe), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "training starts fresh" in err
    assert (out / "checkpoint.pt.corrupt").read_bytes() == b"an older one"
    assert (out / "checkpoint.pt.corrupt.1").read_text() == "<html>not a checkpoint</html>\n"
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


# ======================================================================================================
# Unwritable --out (issue 8 §6.2): exit 2 before any work, naming the path and the reason
# ======================================================================================================

def _unwritable(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A folder that cannot be written, even as root, and the reason the message must give."""
    if kind == "parent is a file":
        (tmp_path / "file.txt").write_text("x")
        return tmp_path / "file.txt" / "run", f"{tmp_path / 'file.txt'} is a file, not a folder"
    if kind == "out is a file":
        (tmp_path / "file.txt").write_text("x")
        return tmp_path / "file.txt", "it is a file, not a folder"
    if kind == "new folder on sysfs":
        path = Path("/sys/dnntune-faults-test/run")
        try:
            os.mkdir(path.parent)
        except OSError as e:
            return path, e.strerror
        os.rmdir(path.parent)
        pytest.skip("/sys is writable here")
    if kind == "existing folder on sysfs":
        try:
            fd, probe = tempfile.mkstemp(dir="/sys")
        except OSError as e:
            return Path("/sys"), e.strerror
        os.close(fd)
        os.unlink(probe)
        pytest.skip("/sys is writable here")
    if kind == "permission denied":
        if os.geteuid() == 0:
            pytest.skip("root writes through chmod")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked / "run", "Permission denied"
    raise AssertionError(kind)


BAD_OUT = ["parent is a file", "out is a file", "new folder on sysfs", "existing folder on sysfs", "permission denied"]


def _must_not_run(*args, **kwargs):
    raise AssertionError("the command started its work despite an unwritable --out")


@pytest.mark.parametrize("kind", BAD_OUT)
def test_prepare_out_dir_names_the_path_and_the_reason(tmp_path, kind):
    path, reason = _unwritable(kind, tmp_path)
    with pytest.raises(OutDirUnwritable) as e:
        prepare_out_dir(path)
    assert isinstance(e.value, UserError) and str(e.value) == f"--out {path}: cannot write there ({reason})"


def test_prepare_out_dir_creates_the_folder_and_leaves_nothing_in_it(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []


@pytest.mark.parametrize("kind", BAD_OUT)
def test_train_with_an_unwritable_out_exits_2_before_training(tmp_path, capsys, monkeypatch, kind):
    path, reason = _unwritable(kind, tmp_path)
    monkeypatch.setattr("dnntune.engine.trainer.Trainer", _must_not_run)
    assert cli.main(["train", str(_train_recipe(tmp_path)), "--out", str(path), "--quiet"]) == 2
    assert capsys.readouterr().err == f"dnntune: error: --out {path}: cannot write there ({reason})\n"


COMMANDS = {  # argv after the command, the function that does its work
    "tune": (["--data", "iris", "--n-trials", "1", "--quiet"], "dnntune.search.tune"),
    "worker": (["--storage", "{tmp}/s.journal", "--study", "s", "--quiet"], "dnntune.search.worker_main"),
    "lr-find": (["{recipe}", "--quiet"], "dnntune.engine.lr_find.lr_find"),
    "ablate": (["{recipe}", "--quiet"], "dnntune.ablation.ablate"),
    "report": (["{tmp}", "--quiet"], "dnntune.report.write_report"),
    "demo": (["--quiet"], "dnntune.search.tune"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_with_an_unwritable_out_exits_2_before_its_work(tmp_path, capsys, monkeypatch, command):
    path, reason = _unwritable("parent is a file", tmp_path)
    argv, work = COMMANDS[command]
    monkeypatch.setattr(work, _must_not_run)
    recipe = _train_recipe(tmp_path)
    argv = [a.format(tmp=tmp_path, recipe=recipe) for a in argv]
    assert cli.main([command, *argv, "--out", str(path)]) == 2
    assert capsys.readouterr().err == f"dnntune: error: --out {path}: cannot write there ({reason})\n"


# ======================================================================================================
# SIGKILL during a checkpoint write (issue 8 §6.3): a complete checkpoint survives at every instant
# ======================================================================================================

@pytest.mark.parametrize("links", [True, False], ids=["hard links", "no hard links"])
def test_at_every_instant_of_a_save_a_complete_checkpoint_exists(tmp_path, monkeypatch, links):
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_checkpoint(path, _state(1, 0))
    save_checkpoint(path, _state(2, 1))
    seen = []

    def complete() -> None:  # what a process killed right now would resume from
        for p in (path, prev):
            try:
                state = load_checkpoint(p)
            except Exception:
                continue
            if set(KEYS) <= set(state) and len(state["model"]["w"]) == 1000:
                seen.append((p.name, state["epoch"]))
                return
        raise AssertionError(f"no complete checkpoint in {sorted(x.name for x in tmp_path.iterdir())}")

    def watched(real):
        def op(*args, **kwargs):
            complete()
            result = real(*args, **kwargs)
            complete()
            return result
        return op

    monkeypatch.setattr(os, "replace", watched(os.replace))
    if links:
        monkeypatch.setattr(os, "link", watched(os.link))
    else:
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    save_checkpoint(path, _state(3, 2))
    monkeypatch.undo()
    assert seen[0] == ("checkpoint.pt", 1) and seen[-1] == ("checkpoint.pt", 2) and len(seen) >= 4
    if links:  # checkpoint.pt itself never goes missing: the old one is hard-linked to .prev, not renamed
        assert {name for name, _ in seen} == {"checkpoint.pt"}
    assert load_checkpoint(path)["epoch"] == 2 and load_checkpoint(prev)["epoch"] == 1


KILL_CHILD = r"""
import errno, io, json, os, signal, sys, traceback
from pathlib import Path
import torch
torch.set_num_threads(1)
from dnntune.engine import checkpoint as ckpt

def state(value, epoch):  # 16 MB of tensor: the write takes a while
    return {"epoch": epoch, "model": {"w": torch.full((1 << 22,), float(value))}, "history": [{"epoch": epoch + 1}]}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def scenario(path, kill, links):  # in a forked process: two saves, then a third one killed at `kill`
    ckpt.save_checkpoint(path, state(1, 0))
    ckpt.save_checkpoint(path, state(2, 1))
    if not links:
        def no_link(*args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")
        os.link = no_link
    if kill == "writing":
        real_save = torch.save
        def half(obj, f, *args, **kwargs):
            buf = io.BytesIO()
            real_save(obj, buf)
            data = buf.getvalue()
            with open(f, "wb") as fh:
                fh.write(data[: len(data) // 2])
            die()
        torch.save = half
    else:  # killed just before the n-th rename or link of the save
        n, done = int(kill), [0]
        def counted(real):
            def op(*args, **kwargs):
                if done[0] == n:
                    die()
                done[0] += 1
                return real(*args, **kwargs)
            return op
        os.replace = counted(os.replace)
        if links:
            os.link = counted(os.link)
    ckpt.save_checkpoint(path, state(3, 2))

results = {}
for name in sys.argv[2:]:
    links, kill = name.split("/")
    folder = Path(sys.argv[1]) / name.replace("/", "-")
    folder.mkdir()
    pid = os.fork()
    if pid == 0:
        try:
            scenario(folder / "checkpoint.pt", kill, links == "links")
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results[name] = ("killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                     else os.waitstatus_to_exitcode(status))
print(json.dumps(results))
"""
KILLS = [f"{links}/{kill}" for links in ("links", "nolinks") for kill in ("writing", "0", "1", "2")]


@pytest.fixture(scope="module")
def killed_saves(tmp_path_factory) -> tuple[Path, dict]:
    """One child process (torch is imported once) forks a process per kill point; each is SIGKILLed mid-save."""
    root = tmp_path_factory.mktemp("killed-saves")
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD, str(root), *KILLS], capture_output=True, text=True,
                          env=_child_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", KILLS)
def test_sigkill_during_a_checkpoint_save_keeps_a_complete_checkpoint(killed_saves, name):
    """A checkpoint save SIGKILLed while writing or before (or between) its renames, with and without hard
    links: the checkpoint before it loads; one not killed (no n-th operation to die at) loads the new one."""
    root, results = killed_saves
    folder = root / name.replace("/", "-")
    killed = results[name] == "killed"
    assert killed or results[name] == 0
    if name.endswith("writing"):
        assert killed and any(p.name.endswith(".tmp") for p in folder.iterdir())  # the torn temp file
    if name in ("links/2", "nolinks/1"):  # between keeping .prev and renaming the new one in
        assert killed
    said = []
    state = load_resumable(folder / "checkpoint.pt", KEYS, warn=said.append)
    value, epoch = (2, 1) if killed else (3, 2)  # killed before the new one was renamed in: the one before
    assert state["epoch"] == epoch and len(state["model"]["w"]) == 1 << 22
    assert bool((state["model"]["w"] == value).all())
    assert said == [] and not any(p.name.endswith(".tmp") for p in folder.iterdir())  # leftovers removed


TRAIN_KILLED_CHILD = r"""
import io, os, signal, sys
import torch
from dnntune import cli

real_save, calls = torch.save, [0]

def save(obj, f, *args, **kwargs):  # the third checkpoint (after epoch 3) is cut in half by a SIGKILL
    calls[0] += 1
    if calls[0] < 3:
        return real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    real_save(obj, buf)
    with open(f, "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save
cli.main(sys.argv[1:])
"""


def test_train_killed_while_writing_a_checkpoint_resumes_from_the_one_before(tmp_path, capsys):
    recipe, out = _train_recipe(tmp_path, checkpoint_every=0), tmp_path / "run"
    argv = ["train", str(recipe), "--out", str(out), "--quiet"]
    proc = subprocess.run([sys.executable, "-c", TRAIN_KILLED_CHILD, *argv], capture_output=True, text=True,
                          env=_child_env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    before = load_checkpoint(out / "checkpoint.pt")
    assert before["epoch"] == 1  # epochs 1-2 are saved
    assert cli.main(argv) == 0
    assert "Traceback" not in capsys.readouterr().err
    rows = _curves(out)
    assert len(rows) == 3 and [r["seconds"] for r in rows[:2]] == [h["seconds"] for h in before["history"]]
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


# ======================================================================================================
# Full disk (issue 8 §6.4): a failed write loses nothing computed and says what is missing
# ======================================================================================================

def _enospc_on(monkeypatch, name: str) -> None:
    real = ckpt.atomic_write_bytes

    def write(path, data):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", write)


FILES = {"model.safetensors": b"\0" * 8, "recipe.yaml": "seed: 0\n", "curves.csv": "epoch\n1\n", "summary.json": "{}\n"}


@pytest.mark.parametrize("checkpoint", [True, False], ids=["checkpoint kept", "no checkpoint"])
def test_write_run_files_on_a_full_disk_names_what_was_written_and_what_is_missing(tmp_path, monkeypatch,
                                                                                   checkpoint):
    if checkpoint:
        save_checkpoint(tmp_path / "checkpoint.pt", _state(1, 0))
    _enospc_on(monkeypatch, "curves.csv")
    with pytest.raises(RunFolderIncomplete) as e:
        write_run_files(tmp_path, FILES)
    err = e.value
    assert isinstance(err, UserError) and err.written == ["model.safetensors", "recipe.yaml"]
    assert err.missing == ["curves.csv", "summary.json"] and err.failed == "curves.csv"
    assert (tmp_path / "recipe.yaml").read_text() == "seed: 0\n" and not (tmp_path / "curves.csv").exists()
    msg = str(err)
    assert f"the run folder {tmp_path} is incomplete" in msg and "(No space left on device)" in msg
    assert "written: model.safetensors, recipe.yaml; missing: curves.csv, summary.json" in msg
    assert ("without retraining" in msg) == checkpoint and ("which retrains" in msg) != checkpoint


@pytest.mark.parametrize("name", ["model.safetensors", "recipe.yaml", "curves.csv", "summary.json"])
def test_train_on_a_full_disk_keeps_the_trained_run_and_a_rerun_finishes_it(tmp_path, capsys, monkeypatch, name):
    recipe, out = _train_recipe(tmp_path), tmp_path / "run"
    argv = ["train", str(recipe), "--out", str(out), "--quiet"]
    _enospc_on(monkeypatch, name)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dnntune: error: the run folder {out} is incomplete: writing {name} failed "
                          "(No space left on device)") and "Traceback" not in err
    missing = err.split("missing: ")[1].split(";")[0].split(", ")
    assert name in missing and not any((out / m).exists() for m in missing)
    assert "without retraining" in err
    trained = _curves(out)
    monkeypatch.undo()
    assert cli.main(argv) == 0
    for m in missing:
        assert (out / m).exists()
    assert [r["seconds"] for r in _curves(out)] == [r["seconds"] for r in trained]  # not retrained
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3


def test_an_early_stopped_run_on_a_full_disk_is_finished_without_training_more(tmp_path, capsys, monkeypatch):
    recipe = write_recipe(tmp_path / "r.yaml", tiny(train={"epochs": 60, "batch_size": 16,
                                                           "early_stopping": {"patience": 2}},
                                                    optim={"name": "sgd", "lr": 1e-6}))
    out = tmp_path / "run"
    argv = ["train", str(recipe), "--out", str(out), "--quiet"]
    _enospc_on(monkeypatch, "summary.json")
    assert cli.main(argv) == 2
    trained = _curves(out)
    assert len(trained) < 60  # it stopped early
    monkeypatch.undo()
    assert cli.main(argv) == 0
    assert [r["seconds"] for r in _curves(out)] == [r["seconds"] for r in trained]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == len(trained) and summary["stopped"] == "early_stopping"


def test_a_full_disk_while_checkpointing_exits_2_and_keeps_the_checkpoint_before(tmp_path, capsys, monkeypatch):
    recipe, out = _train_recipe(tmp_path, checkpoint_every=0), tmp_path / "run"
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # what torch raises when the disk fills up under its zip writer
        calls.append(f)
        if len(calls) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert cli.main(["train", str(recipe), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dnntune: error: cannot write the checkpoint {out / 'checkpoint.pt'} (the write failed")
    assert "the checkpoint written before is kept" in err
    monkeypatch.undo()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 0
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_save_checkpoint_on_a_full_disk_raises_a_user_error_and_keeps_both_checkpoints(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, _state(1, 0))
    save_checkpoint(path, _state(2, 1))

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteFailed, match=r"\(No space left on device\)"):
        save_checkpoint(path, _state(3, 2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and load_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]


# ======================================================================================================
# Torn journal tail (issue 8, defects 5): a study journal whose last record a crash cut short is repaired
# when dnntune opens it (torn bytes backed up beside it, one warning), so later appends keep it readable
# ======================================================================================================

def _journal_study(path: Path, n_trials: int):
    """A study of ``n_trials`` complete trials in the journal file ``path``, opened by dnntune."""
    import optuna

    from dnntune.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="torn", storage=open_storage(str(path)))
    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=n_trials)
    return study


def _load_journal_study(path: Path):
    import optuna

    from dnntune.search.storage import open_storage

    return optuna.load_study(study_name="torn", storage=open_storage(str(path)))


def _torn_warnings(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if str(path) in line]


@pytest.mark.parametrize("cut", ["1 byte", "middle", "all but 1 byte", "all but the newline"])
def test_a_torn_journal_tail_is_backed_up_and_cut_so_the_study_stays_readable(tmp_path, capsys, cut):
    from optuna.trial import TrialState

    path = tmp_path / "study.journal"
    before = _journal_study(path, 3).trials
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1  # the last record: data[start:-1] + b"\n"
    size = len(data) - 1 - start
    keep = {"1 byte": 1, "middle": size // 2, "all but 1 byte": size - 1, "all but the newline": size}[cut]
    path.write_bytes(data[: start + keep])  # the crash: the last append cut after `keep` bytes
    capsys.readouterr()

    study = _load_journal_study(path)
    said = _torn_warnings(capsys.readouterr().err, path)
    backups = sorted(tmp_path.glob("study.journal.torn-*"))
    assert len(said) == 1 and len(backups) == 1
    assert "torn" in said[0] and str(backups[0]) in said[0] and f"{keep} bytes" in said[0]
    assert backups[0].read_bytes() == data[start: start + keep]
    assert path.read_bytes() == data[:start]  # cut back to the last complete record

    trials = study.trials
    assert len(trials) == 3
    for old, new in zip(before[:2], trials[:2]):
        assert (new.state, new.params, new.values) == (old.state, old.params, old.values)
    assert trials[2].params == before[2].params  # the torn record was the last trial's completion
    assert trials[2].state in (TrialState.RUNNING, TrialState.COMPLETE)

    study.optimize(lambda t: (t.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=2)
    again = _load_journal_study(path).trials
    assert _torn_warnings(capsys.readouterr().err, path) == []  # repaired once, nothing torn now
    assert [t.number for t in again] == [0, 1, 2, 3, 4]
    assert [t.state for t in again[3:]] == [TrialState.COMPLETE] * 2
    assert [t.params for t in again] == [t.params for t in trials] + [t.params for t in again[3:]]
    assert path.read_bytes().endswith(b"\n")


def test_a_journal_being_appended_right_now_is_never_cut(tmp_path, capsys):
    # a writer holds Optuna's journal lock and has written half its record: opening waits for the lock,
    # then finds the record complete and leaves it alone
    import threading

    from optuna.storages.journal import JournalFileSymlinkLock

    path = tmp_path / "study.journal"
    _journal_study(path, 1)
    data = path.read_bytes()
    start = data.rindex(b"\n", 0, len(data) - 1) + 1
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    path.write_bytes(data[: start + 10])
    opened = threading.Thread(target=_load_journal_study, args=(path,))
    opened.start()
    opened.join(1.0)
    waited = opened.is_alive()
    with open(path, "ab") as f:
        f.write(data[start + 10:])
    lock.release()
    opened.join(30)
    assert waited and not opened.is_alive()  # it waited for the writer's lock
    assert path.read_bytes() == data and not list(tmp_path.glob("study.journal.torn-*"))
    assert _torn_warnings(capsys.readouterr().err, path) == []


def test_a_journal_with_a_complete_tail_opens_without_a_word(tmp_path, capsys):
    path = tmp_path / "study.journal"
    _journal_study(path, 2)
    data = path.read_bytes()
    capsys.readouterr()
    assert len(_load_journal_study(path).trials) == 2
    assert path.read_bytes() == data and _torn_warnings(capsys.readouterr().err, path) == []
    assert not list(tmp_path.glob("study.journal.torn-*"))
