"""Transfer learning on the one training path: ``model.init_from``, freezing and discriminative learning rates.

- :func:`load_source` reads a source state dict (a run folder's ``model.safetensors``, a ``.safetensors`` file,
  or a ``.pt``/``.pth`` plain ``state_dict`` read with ``torch.load(weights_only=True)``).
- :func:`match_source` loads the tensors whose names and shapes match and reports every tensor of both sides
  (loaded / skipped and why / newly initialized): :class:`TransferTable`, printed to stderr and saved as the run
  folder's ``transfer.json``.
- :class:`FreezeSchedule` is a trainer callback: frozen modules have ``requires_grad`` False and their
  batch-norm layers in eval mode (statistics kept), then unfreeze at once or one block at a time from the head
  down (``train.freeze.unfreeze_every``).
- :func:`lr_groups` is the ``param_groups`` function of :class:`~dnntune.engine.optim.build_optimizer` for
  ``train.backbone_lr_mult`` and ``train.layer_decay``: each group's ``lr_scale`` is a constant multiple of
  ``optim.lr``, so the ratios hold through warm-up and decay.

:func:`setup_transfer` is the one call :meth:`Trainer.setup` makes.
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..models import model_parts
from .callbacks import Callback

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.TransformerEncoder)


# --- loading a source ------------------------------------------------------------------------------------

def source_path(init_from: str) -> Path:
    """The weights file ``model.init_from`` names: a run folder (its ``model.safetensors``) or a file."""
    p = Path(init_from).expanduser()
    if p.is_dir():
        w = p / "model.safetensors"
        if not w.is_file():
            raise ConfigError(f"model.init_from: {init_from} is a folder without model.safetensors; "
                              "give a run folder of `dnntune train`, a .safetensors file or a .pt/.pth state_dict")
        return w
    if not p.is_file():
        raise ConfigError(f"model.init_from: {init_from}: no such file or run folder")
    if p.suffix not in (".safetensors", ".pt", ".pth"):
        raise ConfigError(f"model.init_from: {init_from}: unknown file type {p.suffix or '(none)'}; "
                          "allowed: a run folder, .safetensors, .pt or .pth")
    return p


def load_source(init_from: str) -> dict[str, torch.Tensor]:
    """The source state dict (tensors by name, on the CPU); a ConfigError naming the file if it is not one."""
    p = source_path(init_from)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: name it
            raise ConfigError(f"model.init_from: {p}: not a readable safetensors file ({e})") from None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.init_from: {p}: torch.load(weights_only=True) refused this pickle ({first}); "
                          "only plain state_dicts of tensors are loaded (save one with "
                          "torch.save(model.state_dict(), path))") from None
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"model.init_from: {p}: not a torch file ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "optimizer" in state:
        state = state["model"]  # a dnntune checkpoint.pt: its model weights
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ConfigError(f"model.init_from: {p}: not a state_dict (a mapping of parameter names to tensors), "
                          f"got {type(state).__name__}; save one with torch.save(model.state_dict(), path)")
    return state


# --- the matching table ----------------------------------------------------------------------------------

@dataclass
class TransferTable:
    """What :func:`match_source` did with each tensor: ``loaded``, ``skipped`` (source tensors not used, with
    the reason) and ``new`` (model tensors left as initialized)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    new: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "counts": {"loaded": len(self.loaded), "skipped": len(self.skipped),
                                                  "new": len(self.new)},
                "loaded": self.loaded, "skipped": self.skipped, "new": self.new}

    def render(self) -> str:
        """A short table for the console: the counts, then one line per skipped or new tensor."""
        lines = [f"init_from {self.source}: {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped, "
                 f"{len(self.new)} newly initialized"]
        lines += [f"  skipped  {s['name']:<32} {s['reason']}" for s in self.skipped]
        lines += [f"  new      {s['name']:<32} {s['reason']}" for s in self.new]
        return "\n".join(lines)


def _shape(t: torch.Tensor) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def match_source(model: nn.Module, source: dict[str, torch.Tensor], name: str, head: tuple[str, ...] = (),
                 strict: bool = False, hint: str = "") -> TransferTable:
    """Load the tensors of ``source`` whose names and shapes match ``model``'s state dict, in place.

    Every other tensor is reported with its reason; a head tensor of another shape (another number of
    outputs) stays newly initialized. ``strict``: any mismatch is a ConfigError listing them (nothing loaded).
    ``hint`` is added to a shape mismatch outside the head (e.g. a flatten head on another input length)."""
    target = model.state_dict()
    table = TransferTable(name)
    load = {}
    in_head = lambda k: any(k == h or k.startswith(h + ".") for h in head)  # noqa: E731
    for k, v in source.items():
        if k not in target:
            table.skipped.append({"name": k, "reason": "not in this model"})
        elif v.shape != target[k].shape:
            outputs = in_head(k) and v.ndim > 0 and v.shape[0] != target[k].shape[0]
            why = (f"shape mismatch: source {_shape(v)}, model {_shape(target[k])}"
                   + (" (a head for another number of outputs: re-initialized)" if outputs else hint))
            table.skipped.append({"name": k, "reason": why})
        else:
            load[k] = v
    for k, v in target.items():
        if k not in load:
            why = "shape differs from the source" if k in source else "not in the source"
            table.new.append({"name": k, "reason": f"{why} ({_shape(v)})"})
    table.loaded = list(load)
    if strict and (table.skipped or table.new):
        rows = [f"{r['name']}: {r['reason']}" for r in table.skipped + table.new]
        raise ConfigError(f"model.init_strict: {name} does not match the model in {len(rows)} tensor(s): "
                          + "; ".join(rows[:6]) + ("; ..." if len(rows) > 6 else "")
                          + " (set model.init_strict: false to load what matches)")
    if not load:
        raise ConfigError(f"model.init_from: {name}: no tensor matches the model by name and shape; is it a source "
                          f"of the same model family and size? ({len(table.skipped)} source tensors skipped)")
    with torch.no_grad():
        for k, v in load.items():
            target[k].copy_(v.to(target[k].dtype))
    return table


# --- blocks of a model: the unit of layer decay and gradual unfreezing --------------------------------

@dataclass
class Block:
    """A unit of layer decay and gradual unfreezing: a name and the modules (or direct parameters) it holds."""

    name: str
    modules: list[nn.Module]

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules for p in m.parameters()]


class _ParamHolder(nn.Module):
    """A direct model parameter (a transformer's ``pos``) as a module to freeze or group."""

    def __init__(self, p: nn.Parameter):
        super().__init__()
        self._p = [p]

    def parameters(self, recurse: bool = True):
        return iter(self._p)


def _units(name: str, obj) -> list[Block]:
    if isinstance(obj, nn.Parameter):
        return [Block(name, [_ParamHolder(obj)])]
    if isinstance(obj, CONTAINERS):
        return [u for n, child in obj.named_children() for u in _units(f"{name}.{n}", child)]
    return [Block(name, [obj])] if any(True for _ in obj.parameters()) else []


def backbone_blocks(model: nn.Module, family: str) -> list[Block]:
    """The backbone's blocks from the input up.

    Each backbone part (see :func:`~dnntune.models.model_parts`) is split into its children when it is a
    container (``Sequential``, ``ModuleList``, ``TransformerEncoder``); a child with only 1-D parameters (a
    batch norm) joins the block before it, so a conv and its norm are one block."""
    parts = model_parts(model, family)
    blocks: list[Block] = []
    for part in parts.backbone:
        for unit in _units(part, getattr(model, part)):
            if blocks and all(p.ndim < 2 for p in unit.parameters()):
                blocks[-1].modules += unit.modules
            else:
                blocks.append(unit)
    return blocks


def lr_groups(family: str, backbone_lr_mult: float, layer_decay: float | None):
    """The ``param_groups`` function of discriminative learning rates.

    The head gets ``optim.lr``; backbone block ``i`` of ``n`` (from the input, :func:`backbone_blocks`) gets
    ``optim.lr × backbone_lr_mult × layer_decay^(n − i)`` (timm's layer-wise decay: the block under the head
    ``decay¹``, the first block ``decayⁿ``)."""
    def groups(model: nn.Module) -> list[dict]:
        blocks = backbone_blocks(model, family)
        n = len(blocks)
        seen = {id(p) for b in blocks for p in b.parameters()}
        out = [{"params": b.parameters(), "lr_scale": backbone_lr_mult * (layer_decay ** (n - i) if layer_decay
                                                                           else 1.0)}
               for i, b in enumerate(blocks)]
        rest = [p for p in model.parameters() if id(p) not in seen]
        return out + [{"params": rest, "lr_scale": 1.0}]
    return groups


# --- freezing ---------------------------------------------------------------------------------------------

def _bn_modules(modules: list[nn.Module]) -> list[nn.Module]:
    return [m for mod in modules for m in mod.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class FreezeSchedule(Callback):
    """Freeze ``units`` (name, module) at the start, unfreeze them after ``epochs`` epochs: all at once, or with
    ``every`` one unit per ``every`` epochs from the last unit (next to the head) down to the first.

    While frozen a unit's parameters have ``requires_grad`` False (no gradient, no optimizer step, no weight
    decay) and its batch-norm layers are in eval mode (running statistics unchanged). The state is a function
    of the epoch only, so a resumed run freezes the same. ``log`` records (epoch, unit) as units unfreeze."""

    def __init__(self, units: list[Block], epochs: int, every: int | None = None):
        self.units, self.epochs, self.every = units, epochs, every
        self.log: list[tuple[int, str]] = []
        self._frozen: set[str] = set()

    def frozen_at(self, epoch: int) -> list[str]:
        """Names of the units frozen during ``epoch`` (from 0)."""
        if epoch < self.epochs:
            return [u.name for u in self.units]
        if not self.every:
            return []
        thawed = 1 + (epoch - self.epochs) // self.every  # units unfrozen so far, from the last one
        return [u.name for u in self.units[:max(len(self.units) - thawed, 0)]]

    def on_epoch_start(self, trainer, epoch: int) -> None:
        frozen = set(self.frozen_at(epoch))
        for unit in self.units:
            if unit.name in self._frozen and unit.name not in frozen:
                self.log.append((epoch, unit.name))
            for p in unit.parameters():
                p.requires_grad_(unit.name not in frozen)
            if unit.name in frozen:
                for bn in _bn_modules(unit.modules):
                    bn.eval()
        self._frozen = frozen


def freeze_units(model: nn.Module, family: str, modules, gradual: bool) -> list[Block]:
    """The units ``train.freeze.modules`` names, from the input up.

    ``backbone``: the backbone parts (their blocks, :func:`backbone_blocks`, when unfreezing gradually); a
    list: those modules (dotted names of ``model.named_modules()``), in the order given. An unknown name is a
    ConfigError listing the model's parts."""
    if modules == "backbone":
        if gradual:
            return backbone_blocks(model, family)
        return [Block(n, [_part(model, n)]) for n in model_parts(model, family).backbone]
    named = dict(model.named_modules())
    unknown = [n for n in modules if n not in named or n == ""]
    if unknown:
        top = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
        raise ConfigError(f"train.freeze.modules: {unknown[0]!r} is not a module of this {family} model; allowed: "
                          f"backbone, or module names: {', '.join(top)} (dotted for submodules, e.g. {top[0]}.0)")
    return [Block(n, [named[n]]) for n in modules]


def _part(model: nn.Module, name: str) -> nn.Module:
    obj = getattr(model, name)
    return _ParamHolder(obj) if isinstance(obj, nn.Parameter) else obj


# --- the trainer's one call -------------------------------------------------------------------------------

@dataclass
class TransferPlan:
    """What a recipe asks for: the source table (or None), the param-group function and the freeze callback."""

    table: TransferTable | None = None
    param_groups: object = None
    freeze: FreezeSchedule | None = None


def resolved(train) -> tuple[object, float, float | None]:
    """``(freeze, backbone_lr_mult, layer_decay)`` with the ``train.fine_tune`` preset expanded: freeze the
    backbone for ``freeze_epochs``, then train all with the backbone at ``optim.lr / lr_mult``."""
    if train.fine_tune is None:
        return train.freeze, train.backbone_lr_mult, train.layer_decay
    from ..config import Freeze

    ft = train.fine_tune
    freeze = Freeze(modules="backbone", epochs=ft.freeze_epochs) if ft.freeze_epochs > 0 else None
    return freeze, 1.0 / ft.lr_mult, train.layer_decay


def _input_hint(model: nn.Module) -> str:
    flatten_head = any(isinstance(m, nn.Identity) for n, m in model.named_children() if n == "pool")
    return (" (the model flattens its features into the head, so a source of another input length cannot give "
            "the head; a global-average head (model.head: avg, or resnet) can)" if flatten_head else "")


def setup_transfer(trainer, model: nn.Module) -> TransferPlan:
    """Load ``model.init_from`` into ``model`` (printing the table) and plan freezing and lr groups."""
    r = trainer.recipe
    family = r.model.family
    plan = TransferPlan()
    if r.model.init_from:
        parts = model_parts(model, family)
        plan.table = match_source(model, load_source(r.model.init_from), r.model.init_from, parts.head,
                                  r.model.init_strict, _input_hint(model))
        print(plan.table.render(), file=sys.stderr, flush=True)
    freeze, mult, decay = resolved(r.train)
    wants_backbone = mult != 1.0 or decay or (freeze is not None and freeze.modules == "backbone")
    if wants_backbone and not model_parts(model, family).backbone:
        raise ConfigError(f"train: {family} has no backbone (its only layer is the head), so freezing the backbone, "
                          "train.backbone_lr_mult, train.layer_decay and train.fine_tune do not apply; use a family "
                          "with hidden layers (mlp, cnn1d, cnn2d, resnet, rnn, transformer)")
    if mult != 1.0 or decay:
        plan.param_groups = lr_groups(family, mult, decay)
    if freeze is not None and freeze.epochs + (freeze.unfreeze_every or 0) > 0:
        units = freeze_units(model, family, freeze.modules, bool(freeze.unfreeze_every))
        plan.freeze = FreezeSchedule(units, freeze.epochs, freeze.unfreeze_every)
    return plan


def table_file(trainer) -> dict[str, str]:
    """``transfer.json`` for the run folder when the run was initialized from a source."""
    table = getattr(trainer, "transfer_table", None)
    return {"transfer.json": json.dumps(table.to_dict(), indent=2) + "\n"} if table is not None else {}
