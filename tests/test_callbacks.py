"""The trainer's callback protocol, parameter groups and the one optimizer-step path."""

import pytest
import torch

from dnntune.config import validate_recipe
from dnntune.data import Split
from dnntune.data import loader as data_loader
from dnntune.engine import Trainer, train
from dnntune.engine.callbacks import Callback, StopFit
from dnntune.engine.checkpoint import load_checkpoint
from dnntune.engine.optim import weight_penalty_params
from tests.conftest import tiny


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("fit_start", trainer.state.epoch))

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(("epoch_start", epoch))

    def after_backward(self, trainer, step):
        self.calls.append(("after_backward", step))

    def on_epoch_end(self, trainer, epoch, row):
        self.calls.append(("epoch_end", epoch, row["epoch"]))

    def on_fit_end(self, trainer, result):
        self.calls.append(("fit_end", None if result is None else result.epochs))


def test_every_hook_is_called_in_order_with_the_step_and_epoch():
    rec = Recorder()
    r = validate_recipe(tiny(train={"epochs": 2, "batch_size": 60}))  # iris: 108 training samples → 2 steps/epoch
    res = train(r, callbacks=[rec])
    assert rec.calls == [("fit_start", 0),
                         ("epoch_start", 0), ("after_backward", 0), ("after_backward", 1), ("epoch_end", 0, 1),
                         ("epoch_start", 1), ("after_backward", 2), ("after_backward", 3), ("epoch_end", 1, 2),
                         ("fit_end", 2)]
    assert res.stopped == "completed"


def test_after_backward_runs_before_the_optimizer_step_and_can_change_gradients():
    class ZeroGrads(Callback):  # a gradient mask over everything: the model must not move
        def after_backward(self, trainer, step):
            assert all(p.grad is not None for p in trainer.model.parameters())
            for p in trainer.model.parameters():
                p.grad.zero_()

    r = validate_recipe(tiny(optim={"name": "sgd", "lr": 0.1}))
    trainer = Trainer(r, callbacks=[ZeroGrads()])
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def test_stop_fit_ends_mid_epoch_and_still_evaluates_and_writes_the_run(tmp_path):
    class StopAtStep(Callback):
        def after_backward(self, trainer, step):
            if step == 5:
                raise StopFit("enough")

    rec = Recorder()
    res = train(validate_recipe(tiny(train={"epochs": 5, "batch_size": 16})), out_dir=tmp_path,
                callbacks=[StopAtStep(), rec])
    assert res.stopped == "enough" and res.epochs == 0  # no epoch finished
    assert "val" in res.metrics and (tmp_path / "summary.json").is_file()
    assert rec.calls[-1] == ("fit_end", 0)


def test_on_fit_end_sees_none_when_the_fit_raises():
    class Boom(Callback):
        def on_epoch_end(self, trainer, epoch, row):
            raise RuntimeError("boom")

    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        train(validate_recipe(tiny()), callbacks=[Boom(), rec])
    assert rec.calls[-1] == ("fit_end", None)


def test_each_parameter_group_keeps_its_own_base_lr_through_the_schedule():
    seen = []

    class Spy(Callback):
        def after_backward(self, trainer, step):
            seen.append([g["lr"] for g in trainer.optimizer.param_groups])

    def head_faster(model):  # the hidden layer at a tenth of the head's rate, as discriminative lrs are
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        return [{"params": layers[0].parameters(), "lr_scale": 0.1}, {"params": layers[-1].parameters()}]

    r = validate_recipe(tiny(optim={"name": "sgd", "lr": 0.1, "weight_decay": 1e-4}, schedule={"name": "cosine"},
                             train={"epochs": 3, "batch_size": 16}))
    Trainer(r, callbacks=[Spy()], param_groups=head_faster).fit()
    # groups: hidden weight, hidden bias, head weight, head bias (decayed / undecayed split per group)
    assert len(seen[0]) == 4 and seen[0] == pytest.approx([0.01, 0.01, 0.1, 0.1])
    for lrs in seen:
        assert lrs[0] == pytest.approx(lrs[2] / 10) and lrs[1] == pytest.approx(lrs[3] / 10)
    assert seen[-1][2] < seen[0][2] / 2  # the cosine really decayed every group


def test_a_frozen_group_stays_frozen():
    def frozen_hidden(model):
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        return [{"params": layers[0].parameters(), "lr": 0.0}, {"params": layers[-1].parameters()}]

    trainer = Trainer(validate_recipe(tiny()), param_groups=frozen_hidden)
    trainer.setup()
    first = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][0]
    w0, head0 = first.weight.clone(), [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    head_w0 = head0.weight.clone()
    trainer.fit()
    assert torch.equal(first.weight, w0) and not torch.equal(head0.weight, head_w0)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_transformer_positions_and_class_token_get_no_weight_decay_or_l1(pooling):
    r = validate_recipe({"data": {"name": "digits"}, "model": {"family": "transformer", "d_model": 16, "heads": 2,
                                                                "layers": 1, "pooling": pooling},
                         "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1}, "train": {"l1": 1e-4}})
    trainer = Trainer(r)
    trainer.setup()
    model = trainer.model
    exempt = {id(model.pos)} | ({id(model.cls)} if model.cls is not None else set())
    decayed = {id(p) for g in trainer.optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert not exempt & decayed and id(model.embed.weight) in decayed
    assert not exempt & {id(p) for p in weight_penalty_params(model)}


def test_in_memory_auto_streams_a_split_too_large_for_the_free_device_memory(monkeypatch):
    split = Split(torch.zeros(1000, 10), torch.zeros(1000, dtype=torch.long))  # 40 kB + 8 kB
    cuda = torch.device("cuda")
    monkeypatch.setattr(data_loader, "free_device_memory", lambda device: 10_000)
    assert data_loader.keep_on_device("auto", split, cuda) is False
    assert data_loader.keep_on_device(True, split, cuda) is True
    monkeypatch.setattr(data_loader, "free_device_memory", lambda device: 10_000_000)
    assert data_loader.keep_on_device("auto", split, cuda) is True
    assert data_loader.keep_on_device(False, split, cuda) is False
    assert data_loader.keep_on_device("auto", split, torch.device("cpu")) is True


def test_in_memory_false_trains_through_a_dataloader_to_the_same_kind_of_result():
    trainer = Trainer(validate_recipe(tiny(data={"name": "iris", "in_memory": False})))
    res = trainer.fit()
    assert isinstance(trainer.loader(), torch.utils.data.DataLoader)
    assert res.metrics["val"]["accuracy"] > 0.5


def test_checkpoint_holds_the_scaler_and_rng_state(tmp_path):
    train(validate_recipe(tiny()), out_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert "scaler" in state and "rng" in state and state["step"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_resume_is_exact_on_cuda_with_amp(tmp_path):
    r = validate_recipe(tiny(train={"epochs": 4, "batch_size": 16, "device": "cuda", "amp": True,
                                    "checkpoint_every": 0}, augment={"mixup": 0.2}))
    full = train(r)

    def stop_after_2(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(r, out_dir=tmp_path, on_epoch_end=stop_after_2).fit()
    assert "cuda_rng" in load_checkpoint(tmp_path / "checkpoint.pt")
    resumed = Trainer(r, out_dir=tmp_path).fit()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]


def test_trainer_has_no_max_epochs_argument_that_could_disagree_with_the_schedule():
    with pytest.raises(TypeError):
        Trainer(validate_recipe(tiny()), max_epochs=2)
