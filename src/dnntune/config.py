"""The recipe / experiment schema: YAML loading, ``--set`` overrides, validation with clear errors.

A *recipe* is a fully concrete training configuration. An *experiment* is a recipe in which any
value may be a search dimension (``{float: [lo, hi], log: true}``, ``{int: [lo, hi]}``,
``{choice: [...]}``); the search layer resolves dimensions into recipes. Validation happens once,
here: inner code receives typed, frozen objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import Knobs, Registry

SECTIONS = ("seed", "data", "model", "loss", "optim", "schedule", "train", "augment", "search", "plugins")
DIMENSION_KEYS = ("float", "int", "choice")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- named sections: a registry name plus that entry's knobs ------------------------------------


class DataSection(Section):
    """``data:`` the dataset name, split fractions and the dataset's own knobs."""

    name: str
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the training part held out for "
                                "validation (0: none; no early stopping or plateau then, and no tuning)")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share held out for test (if no own split)")
    normalize: bool = Field(True, description="standardize inputs with training-split statistics")
    in_memory: Literal["auto", True, False] = Field("auto", description="hold data as device tensors")
    kind: Literal["auto", "tabular", "signal", "image", "sequence"] = Field(
        "auto", description="what the inputs are; auto: the dataset's own kind, or inferred from the array shape")
    knobs: Knobs


class ModelSection(Section):
    """``model:`` the model family and its size knobs."""

    family: str
    init_from: str | None = Field(None, description="initialize from a source: a run folder, a .safetensors "
                                  "file or a .pt/.pth state_dict; tensors matching by name and shape are loaded")
    init_strict: bool = Field(False, description="any tensor of init_from that does not match is an error")
    knobs: Knobs


class LossSection(Section):
    """``loss:`` the loss function and its knobs."""

    name: str = "auto"
    knobs: Knobs


class OptimSection(Section):
    """``optim:`` a torch.optim optimizer, its learning rate and weight decay."""

    name: str = "adamw"
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 (SGD...) or decoupled (AdamW) decay")
    decay_norm_and_bias: bool = Field(False, description="also decay biases and normalization weights")
    knobs: Knobs


class ScheduleSection(Section):
    """``schedule:`` learning-rate schedule as a function of the step, with optional linear warmup."""

    name: str = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear warmup length")
    warmup_start_factor: float = Field(0.0, ge=0.0, le=1.0, description="lr factor at step 0 of warmup")
    knobs: Knobs


NAMED = {
    "data": (DataSection, "name", "datasets"),
    "model": (ModelSection, "family", "models"),
    "loss": (LossSection, "name", "losses"),
    "optim": (OptimSection, "name", "optimizers"),
    "schedule": (ScheduleSection, "name", "schedules"),
}

# --- fixed sections -----------------------------------------------------------------------------


class EarlyStopping(Section):
    patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0, description="smallest change that counts as improvement")
    restore_best: bool = Field(True, description="end with the weights of the best validation epoch")


class BatchGrowth(Section):
    """Dynamic batch size: multiply by ``factor`` every ``every_epochs`` or after a plateau."""

    factor: float = Field(2.0, gt=1.0)
    every_epochs: int | None = Field(None, ge=1)
    on_plateau: int | None = Field(None, ge=1, description="grow after this many epochs w/o improvement")
    max_batch_size: int = Field(4096, ge=1)

    @model_validator(mode="after")
    def _some_trigger(self):
        if self.every_epochs is None and self.on_plateau is None:
            raise ValueError("set every_epochs or on_plateau (or both): without either the batch never grows")
        return self


class Freeze(Section):
    """``train.freeze``: keep modules frozen (no gradient, batch-norm statistics kept) for the first epochs."""

    modules: Literal["backbone"] | list[str] = Field("backbone", description="backbone, or module names")
    epochs: int = Field(1, ge=0, description="epochs before the (first) unfreezing")
    unfreeze_every: int | None = Field(None, ge=1, description="gradual: unfreeze one more block every this many "
                                       "epochs, from the head down (the first at `epochs`)")


class FineTune(Section):
    """``train.fine_tune``: fastai's recipe: the head alone for freeze_epochs, then all, backbone at lr/lr_mult."""

    freeze_epochs: int = Field(1, ge=0, description="epochs training only the head")
    lr_mult: float = Field(100.0, ge=1.0, description="the backbone trains at optim.lr / lr_mult")


class TrainSection(Section):
    """``train:`` epochs, batch size, regularization, stopping, device."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1, description="batch size of evaluation passes")
    l1: float = Field(0.0, ge=0.0, description="L1 penalty on weights (not biases/norms)")
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    early_stopping: EarlyStopping = EarlyStopping()
    batch_growth: BatchGrowth | None = None
    metric: str | None = Field(None, description="validation metric to select on; default by task")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    amp: bool = Field(False, description="mixed precision (CUDA only; ignored on CPU)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    checkpoint: bool = Field(True, description="write atomic checkpoints a run resumes from")
    checkpoint_every: float = Field(30.0, ge=0.0, description="seconds between checkpoints at epoch ends "
                                    "(0: every epoch) and after the last epoch; a crash loses at most this much work")
    freeze: Freeze | None = None
    backbone_lr_mult: float = Field(1.0, gt=0.0, description="the backbone's lr as a multiple of optim.lr")
    layer_decay: float | None = Field(None, gt=0.0, le=1.0, description="layer-wise lr decay: block i of n "
                                      "below the head trains at lr × layer_decay^(n − i)")
    fine_tune: FineTune | None = None

    @model_validator(mode="after")
    def _one_fine_tune(self):
        if self.fine_tune is not None and (self.freeze is not None or self.backbone_lr_mult != 1.0):
            raise ValueError("fine_tune is a preset of freeze and backbone_lr_mult: set either fine_tune or those")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("allowed: auto, cpu, cuda, cuda:N, mps")


class AugmentSection(Section):
    """``augment:`` whole-batch augmentation with per-sample random parameters. 0 / false = off."""

    shift: int = Field(0, ge=0, description="signals: max shift in samples")
    scale: float = Field(0.0, ge=0.0, description="signals: amplitude scale range (1 ± scale)")
    noise: float = Field(0.0, ge=0.0, description="signals and images: std of additive Gaussian noise")
    crop: int = Field(0, ge=0, description="images: random translation by up to this many pixels")
    flip: bool = Field(False, description="images: random horizontal flip")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="images: max rotation in degrees")
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="images: scale range (1 ± zoom)")
    cutout: int = Field(0, ge=0, description="images: side of a zeroed square")
    mixup: float = Field(0.0, ge=0.0, description="mixup Beta(alpha, alpha); 0 = off")
    cutmix: float = Field(0.0, ge=0.0, description="cutmix Beta(alpha, alpha); 0 = off")
    mix_prob: float = Field(1.0, ge=0.0, le=1.0, description="share of batches mixed when mixup/cutmix on")
    token_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="text: share of tokens dropped at random (the "
                                 "rest close up, padding after them)")
    token_mask: float = Field(0.0, ge=0.0, lt=1.0, description="text: share of tokens replaced by the unknown "
                              "token at random")

    def enabled(self) -> bool:
        return self != AugmentSection()


class SearchSection(Section):
    """``search:`` how `dnntune tune` searches (ignored by `dnntune train`)."""

    sampler: Literal["tpe", "random", "grid", "gp", "cmaes", "nsga2"] = "tpe"
    pruner: Literal["none", "median", "asha", "hyperband"] = "asha"
    n_trials: int | None = Field(50, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds")
    epoch_budget: int | None = Field(None, ge=1, description="total epochs over all trials")
    workers: int = Field(1, ge=1)
    metric: str | None = None
    direction: Literal["maximize", "minimize"] | None = None
    objectives: list[str] | None = None
    final: Literal["retrain", "best_trial"] = "retrain"
    max_consecutive_failures: int = Field(10, ge=1)
    lr_prior: Literal["none", "range_test"] = "none"
    folds: int = Field(1, ge=1, le=20, description="k-fold cross-validation per trial: its value is the mean "
                       "validation metric over k train/val splits of the non-test data (1: one val split)")
    seed: int | None = None
    warm_start: list[str] | None = Field(None, description="earlier studies whose best recipes run first: tune "
                                         "folders or STORAGE#STUDY (docs/warm-start.md)")
    warm_start_top_k: int = Field(5, ge=1, description="recipes taken from each warm-start source")


class Recipe(Section):
    """A concrete training configuration: no search dimensions left."""

    seed: int = 0
    data: DataSection
    model: ModelSection
    loss: LossSection
    optim: OptimSection
    schedule: ScheduleSection
    train: TrainSection = TrainSection()
    augment: AugmentSection = AugmentSection()
    search: SearchSection = SearchSection()
    plugins: list[str] = Field(default_factory=list, description="user modules that register model families or "
                               "datasets (dnntune.plugins), imported before the recipe is validated")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, in the shape of the YAML file (knobs flattened)."""
        out: dict[str, Any] = {"seed": self.seed}
        if self.plugins:  # first: they are imported before anything else is read
            out["plugins"] = list(self.plugins)
        for name in (n for n in SECTIONS[1:] if n != "plugins"):
            section = getattr(self, name)
            if name in NAMED:
                key = NAMED[name][1]
                flat = section.model_dump(mode="json", exclude={"knobs"})
                d = {key: flat.pop(key), **flat, **section.knobs.model_dump(mode="json")}
            else:
                d = section.model_dump(mode="json")
            out[name] = d
        return out

    def to_yaml(self) -> str:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # the C dumper when libyaml is there
        return yaml.dump(self.to_dict(), Dumper=dumper, sort_keys=False)


# --- loading ------------------------------------------------------------------------------------


def _registries() -> dict[str, Registry]:
    # imported here: component modules import this module for their section types
    from .data import DATASETS
    from .engine.losses import LOSSES
    from .engine.optim import OPTIMIZERS
    from .engine.schedules import SCHEDULES
    from .models import MODELS

    return {"datasets": DATASETS, "models": MODELS, "losses": LOSSES, "optimizers": OPTIMIZERS,
            "schedules": SCHEDULES}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file safely; errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)})")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars/lists/maps)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        path, value = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        node = raw
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None or not isinstance(nxt, dict) else nxt
                node[k] = nxt
            node = nxt
        node[keys[-1]] = parsed
    return raw


def is_dimension(value: Any) -> bool:
    """True for a search-dimension mapping such as ``{float: [1e-4, 1e-1], log: true}``."""
    return isinstance(value, dict) and len(set(value) & set(DIMENSION_KEYS)) == 1


def find_dimensions(raw: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every search dimension in an experiment."""
    if is_dimension(raw):
        return [prefix or "<root>"]
    found: list[str] = []
    if isinstance(raw, dict):
        for k, v in raw.items():
            found += find_dimensions(v, f"{prefix}.{k}" if prefix else str(k))
    return found


def _format_validation(section: str, err: ValidationError, allowed: list[str] | None = None,
                       renamed: dict[str, str] | None = None) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if p != "knobs"]
        if loc and renamed and loc[0] in renamed:  # a key given in the chosen option's block
            loc[0] = renamed[loc[0]]
        loc = ".".join(loc)
        path = f"{section}.{loc}" if loc else section
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            if allowed is not None:
                msg += f"; allowed: {', '.join(allowed) or '(none)'}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
        lines.append(f"{path}: {msg}")
    return "\n".join(lines)


# --- conditional knobs --------------------------------------------------------------------------


def registered_options(section: str) -> list[str]:
    """The registry names a named section may choose (``optim`` → sgd, adam, ...)."""
    return _registries()[NAMED[section][2]].names()


def _is_option_block(name: Any, value: Any, registry_names) -> bool:
    return isinstance(name, str) and name in registry_names and (
        value is None or (isinstance(value, dict) and not is_dimension(value)))


def option_block(raw_section: dict[str, Any], chosen: Any) -> dict[str, Any]:
    """The chosen option's own block of a named section (``sgd:`` in ``optim: {name: sgd, sgd: {...}}``)."""
    block = raw_section.get(chosen) if isinstance(chosen, str) else None
    return block if isinstance(block, dict) and not is_dimension(block) else {}


def merge_chosen_option(section_name: str, raw_section: dict[str, Any], chosen: Any,
                        registry_names) -> dict[str, Any]:
    """The one resolution of conditional knobs, for recipes (:func:`validate_recipe`) and search spaces
    (:func:`dnntune.search.space.suggest_recipe`) alike.

    A named section may hold a block per registered option (``optim: {name: sgd, lr: 0.1, sgd: {lr:
    0.01, momentum: 0.9}, adam: {beta1: 0.8}}``). The chosen option's block is merged into the section:
    it may hold any of the section's fields (``lr``) or the option's knobs (``momentum``), and its
    values win over the section's. The blocks of the other registered options are dropped. The
    section's ``name``/``family`` cannot be set inside a block.
    """
    key = NAMED[section_name][1]
    block = option_block(raw_section, chosen)
    if key in block:
        raise ConfigError(f"{section_name}.{chosen}.{key}: the option's block cannot choose the option; "
                          f"set {section_name}.{key}")
    names = set(registry_names)
    out = {k: v for k, v in raw_section.items() if not _is_option_block(k, v, names)}
    out.update(block)
    return out


def _validate_named(section: str, raw: Any, regs: dict[str, Registry]):
    cls, key, reg_name = NAMED[section]
    if raw is None:
        raw = {}
    if isinstance(raw, str):  # shorthand: `loss: cross_entropy`
        raw = {key: raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a mapping with '{key}' and knobs, got {raw!r}")
    registry = regs[reg_name]
    default = cls.model_fields[key].default if not cls.model_fields[key].is_required() else None
    name = raw.get(key, default)
    if name is None:
        raise ConfigError(f"{section}.{key}: required; allowed: {', '.join(registry.names())}")
    entry = registry.get(name, f"{section}.{key}")
    merged = merge_chosen_option(section, raw, name, registry.names())
    renamed = {k: f"{name}.{k}" for k in option_block(raw, name)}
    common = {k: v for k, v in merged.items() if k in cls.model_fields and k not in (key, "knobs")}
    rest = {k: v for k, v in merged.items() if k not in cls.model_fields}
    own = [k for k in cls.model_fields if k not in (key, "knobs")]
    allowed = own + list(entry.knobs.model_fields)
    try:
        knobs = entry.knobs(**rest)
    except ValidationError as e:
        raise ConfigError(_format_validation(section, e, allowed, renamed)) from None
    try:
        return cls(**{key: name}, **common, knobs=knobs)
    except ValidationError as e:
        raise ConfigError(_format_validation(section, e, allowed, renamed)) from None


def validate_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate plain data into a :class:`Recipe`; any search dimension is an error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; allowed: {', '.join(SECTIONS)}")
    from .plugins import load_plugins, used_plugins

    load_plugins(raw.get("plugins"))  # the registries must know the plugins' names before validation
    dims = [d for d in find_dimensions({k: v for k, v in raw.items() if k != "search"})]
    if dims:
        raise ConfigError(
            f"{dims[0]}: is a search dimension; `dnntune train` needs concrete values "
            f"(use `dnntune tune` to search, or `--set {dims[0]}=VALUE`)"
        )
    if "data" not in raw:
        raise ConfigError("data: required section (e.g. `data: {name: mnist1d}`)")
    if "model" not in raw:
        raise ConfigError("model: required section (e.g. `model: {family: mlp}`)")
    regs = _registries()
    parts: dict[str, Any] = {}
    for section in NAMED:
        parts[section] = _validate_named(section, raw.get(section), regs)
    for section, cls in (("train", TrainSection), ("augment", AugmentSection), ("search", SearchSection)):
        value = raw.get(section) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{section}: expected a mapping, got {value!r}")
        try:
            parts[section] = cls(**value)
        except ValidationError as e:
            raise ConfigError(_format_validation(section, e, _field_names(cls, e))) from None
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer (got {seed!r})")
    plugins = list(dict.fromkeys([*(raw.get("plugins") or []), *used_plugins(raw)]))  # recorded in recipe.yaml
    return Recipe(seed=seed, plugins=plugins, **parts)


def _field_names(cls: type[BaseModel], err: ValidationError) -> list[str]:
    # for unknown keys in a nested model, list that model's fields
    for e in err.errors():
        if e["type"] == "extra_forbidden" and len(e["loc"]) > 1:
            sub = cls.model_fields[str(e["loc"][0])].annotation
            for cand in getattr(sub, "__args__", (sub,)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    return list(cand.model_fields)
    return list(cls.model_fields)


def load_recipe(path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    raw = apply_overrides(read_yaml(path), overrides)
    if seed is not None:
        raw["seed"] = seed
    from .plugins import load_plugins

    load_plugins(raw.get("plugins"), base_dir=Path(path).parent)  # a plugin module may sit beside the file
    return validate_recipe(raw, str(path))
