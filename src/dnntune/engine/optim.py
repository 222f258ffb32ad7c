"""Optimizer registry over ``torch.optim``, with no weight decay on biases and norm weights by default."""

from __future__ import annotations

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


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Split parameters into decayed (weights of rank ≥ 2) and undecayed (biases, norm weights)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if (p.ndim >= 2 or decay_norm_and_bias) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(section, model: nn.Module) -> torch.optim.Optimizer:
    """The torch.optim optimizer of a validated ``optim:`` section."""
    entry = OPTIMIZERS.get(section.name, "optim.name")
    cls, kwargs = entry.builder(section.knobs)
    groups = param_groups(model, section.weight_decay, section.decay_norm_and_bias)
    opt = cls(groups, lr=section.lr, **kwargs)
    for g in opt.param_groups:
        g["base_lr"] = section.lr
    return opt


def weight_penalty_params(model: nn.Module) -> list[torch.Tensor]:
    """Parameters the L1 penalty applies to: weights of rank ≥ 2 (not biases or norms)."""
    return [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
