"""Optimizer registry over ``torch.optim``, with no weight decay on biases and norm weights by default."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field, model_validator
from torch import nn

from ..registry import Knobs, NoKnobs, Registry

OPTIMIZERS: Registry = Registry("optimizer")


class SGDKnobs(Knobs):
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    dampening: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _nesterov(self):
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        return self


class AdamKnobs(Knobs):
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    amsgrad: bool = False


class AdamLikeKnobs(Knobs):
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)


class RMSpropKnobs(Knobs):
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="smoothing of the squared-gradient average")
    eps: float = Field(1e-8, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    centered: bool = False


class AdadeltaKnobs(Knobs):
    rho: float = Field(0.9, gt=0.0, lt=1.0)
    eps: float = Field(1e-6, gt=0.0)


def _adam_kw(k) -> dict:
    return {"betas": (k.beta1, k.beta2), "eps": k.eps}


@OPTIMIZERS.register("sgd", SGDKnobs)
def sgd(knobs: SGDKnobs):
    """Stochastic gradient descent, optional (Nesterov) momentum: v ← μv + g; θ ← θ − ηv."""
    return torch.optim.SGD, {"momentum": knobs.momentum, "nesterov": knobs.nesterov, "dampening": knobs.dampening}


@OPTIMIZERS.register("adam", AdamKnobs)
def adam(knobs: AdamKnobs):
    """Adam: bias-corrected first/second moment estimates; weight_decay is an L2 term in the gradient."""
    return torch.optim.Adam, {**_adam_kw(knobs), "amsgrad": knobs.amsgrad}


@OPTIMIZERS.register("adamw", AdamKnobs)
def adamw(knobs: AdamKnobs):
    """AdamW: Adam with decoupled weight decay θ ← θ − η·λ·θ."""
    return torch.optim.AdamW, {**_adam_kw(knobs), "amsgrad": knobs.amsgrad}


@OPTIMIZERS.register("nadam", AdamLikeKnobs)
def nadam(knobs: AdamLikeKnobs):
    """NAdam: Adam with Nesterov momentum."""
    return torch.optim.NAdam, _adam_kw(knobs)


@OPTIMIZERS.register("radam", AdamLikeKnobs)
def radam(knobs: AdamLikeKnobs):
    """RAdam: Adam with a rectified variance warmup."""
    return torch.optim.RAdam, _adam_kw(knobs)


@OPTIMIZERS.register("adamax", AdamLikeKnobs)
def adamax(knobs: AdamLikeKnobs):
    """Adamax: Adam with the infinity norm."""
    return torch.optim.Adamax, _adam_kw(knobs)


@OPTIMIZERS.register("rmsprop", RMSpropKnobs)
def rmsprop(knobs: RMSpropKnobs):
    """RMSprop: s ← αs + (1−α)g²; θ ← θ − η·g/(√s + ε)."""
    return torch.optim.RMSprop, {"alpha": knobs.alpha, "eps": knobs.eps, "momentum": knobs.momentum,
                                 "centered": knobs.centered}


@OPTIMIZERS.register("adagrad", NoKnobs)
def adagrad(knobs: NoKnobs):
    """Adagrad: per-parameter rates scaled by the sum of squared gradients."""
    return torch.optim.Adagrad, {}


@OPTIMIZERS.register("adadelta", AdadeltaKnobs)
def adadelta(knobs: AdadeltaKnobs):
    """Adadelta: Adagrad with a decaying average of squared updates."""
    return torch.optim.Adadelta, {"rho": knobs.rho, "eps": knobs.eps}


ParamGroupFn = Callable[[nn.Module], list[dict]]


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names a model declares exempt from weight decay and L1 (timm's ``no_weight_decay()``):
    positional embeddings, class tokens. A name ``pos`` also covers ``block.pos`` of a submodule."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "no_weight_decay", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    return names


def _decayed(name: str, p: torch.Tensor, exempt: set[str], decay_norm_and_bias: bool) -> bool:
    return name not in exempt and (p.ndim >= 2 or decay_norm_and_bias)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool,
                 groups: list[dict] | None = None) -> list[dict]:
    """Optimizer parameter groups: each group of ``groups`` (default: one group of every parameter) split
    into decayed (weights of rank ≥ 2) and undecayed (biases, norm weights, the model's ``no_weight_decay()``).

    A group may set ``lr`` (its own base learning rate) or ``lr_scale`` (a multiple of ``optim.lr``),
    and ``weight_decay``; frozen parameters (``requires_grad`` False) are left out."""
    exempt = no_weight_decay_names(model)
    names = {id(p): n for n, p in model.named_parameters()}
    out = []
    for group in groups or [{"params": list(model.parameters())}]:
        extra = {k: v for k, v in group.items() if k != "params"}
        wd = extra.pop("weight_decay", weight_decay)
        decay, no_decay = [], []
        for p in group["params"]:
            if p.requires_grad:
                (decay if _decayed(names.get(id(p), ""), p, exempt, decay_norm_and_bias) else no_decay).append(p)
        if wd == 0:  # nothing to tell apart: one group (each group costs the optimizer a pass per step)
            decay, no_decay = decay + no_decay, []
        out += [{"params": ps, "weight_decay": w, **extra} for ps, w in ((decay, wd), (no_decay, 0.0)) if ps]
    return out


def build_optimizer(section, model: nn.Module, param_group_fn: ParamGroupFn | None = None) -> torch.optim.Optimizer:
    """The torch.optim optimizer of a validated ``optim:`` section.

    ``param_group_fn(model)`` returns the groups to optimize (layer-wise learning rates, a backbone/head
    split); each group keeps its own base learning rate ``base_lr`` (``lr``, or ``lr_scale`` × ``optim.lr``)
    that the schedule's factor multiplies at every step.

    Example:
        >>> from dnntune.config import OptimSection
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
        >>> head = lambda m: [{"params": m[0].parameters(), "lr_scale": 0.1}, {"params": m[1].parameters()}]
        >>> opt = build_optimizer(OptimSection(name="sgd", lr=0.5, knobs=OPTIMIZERS.get("sgd").knobs()), model, head)
        >>> [g["base_lr"] for g in opt.param_groups]  # weight_decay 0: no decayed / undecayed split
        [0.05, 0.5]
    """
    entry = OPTIMIZERS.get(section.name, "optim.name")
    cls, kwargs = entry.builder(section.knobs)
    requested = [dict(g, params=list(g["params"])) for g in param_group_fn(model)] if param_group_fn else None
    groups = param_groups(model, section.weight_decay, section.decay_norm_and_bias, requested)
    for g in groups:
        g["base_lr"] = g.pop("lr", section.lr * g.pop("lr_scale", 1.0))
        g.pop("lr_scale", None)
        g["lr"] = g["base_lr"]
    return cls(groups, lr=section.lr, **kwargs)


def weight_penalty_params(model: nn.Module) -> list[torch.Tensor]:
    """Parameters the L1 penalty applies to: weights of rank ≥ 2, not biases, norms or the model's
    ``no_weight_decay()`` parameters."""
    exempt = no_weight_decay_names(model)
    return [p for n, p in model.named_parameters() if p.requires_grad and _decayed(n, p, exempt, False)]
