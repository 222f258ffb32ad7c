"""User model families and datasets: the decorators, the ``plugins:`` modules, entry points.

A user brings their own ``nn.Module`` or data by registering a builder in a module of theirs::

    import dnntune
    from pydantic import BaseModel

    class MyKnobs(BaseModel):
        width: int = 32

    @dnntune.register_model("mynet", MyKnobs, kinds=("tabular",))
    def mynet(knobs, spec, num_outputs):
        return MyNet(spec.flat_size, knobs.width, num_outputs)

and naming that module in the experiment (``plugins: [my_models]``) or on the command line
(``--plugin my_models``). Registrations go into the same registries as the built-in families and datasets,
so their knobs are validated and searchable like any other, and the entry records the plugin module
(``meta["plugin"]``), which run folders record so ``load_run`` can import it again.

Security: a plugin is Python code. dnntune imports a user module only when the user names it (the
``plugins:`` list, ``--plugin``, or the plugins a run folder or study recorded from such a list). Installed
packages may offer plugins through the entry-point group ``dnntune.plugins``; they are *discovered* (listed
by ``dnntune models``) but imported only when named the same way, so installing a package never changes
what a run executes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError, UserError
from .registry import Knobs, NoKnobs, Registry

ENTRY_POINT_GROUP = "dnntune.plugins"
MAIN = "__main__"  # registrations made in the user's script: usable in this process only

_loaded: dict[str, str] = {}  # plugin name → where it came from (a file, or the entry point)
_dirs: list[str] = []  # directories added to sys.path to import plugins found beside an experiment


# --- registering ----------------------------------------------------------------------------------


def _strict_knobs(knobs: Any, what: str, name: str, module: str) -> type[Knobs]:
    """Our ``Knobs`` class as given; a plain pydantic model made strict (unknown keys rejected, frozen)."""
    if isinstance(knobs, type) and issubclass(knobs, Knobs):
        return knobs
    if not (isinstance(knobs, type) and issubclass(knobs, BaseModel)):
        raise ConfigError(f"plugin {module}: {what} {name!r}: knobs must be a pydantic model class (a subclass "
                          f"of pydantic.BaseModel or dnntune.registry.Knobs), got {knobs!r}")
    config = ConfigDict(**{**knobs.model_config, "extra": "forbid", "frozen": True})
    return type(knobs.__name__, (knobs, Knobs), {"model_config": config, "__module__": knobs.__module__,
                                                 "__doc__": knobs.__doc__})


def _register(registry: Registry, what: str, name: str, knobs: Any, fn: Callable, builder: Callable,
              **meta: Any) -> None:
    module = getattr(fn, "__module__", None) or MAIN
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"plugin {module}: {what} name {name!r}: use a name like my_net (letters, digits, _)")
    if not callable(fn):
        raise ConfigError(f"plugin {module}: {what} {name!r}: the decorator must be applied to a builder function")
    strict = _strict_knobs(knobs, what, name, module)
    if name in registry:
        old = registry.get(name).meta.get("plugin")
        if old != module:  # the same module registering again (a re-import) replaces its own entry
            owner = "built in" if old is None else f"registered by plugin {old}"
            raise ConfigError(f"plugin {module}: {what} {name!r} clashes with the {what} of that name "
                              f"({owner}); choose another name")
        registry._entries.pop(name)
    builder.__doc__ = fn.__doc__  # `dnntune models` shows the user's docstring
    registry.register(name, strict, plugin=module, **meta)(builder)


def register_model(name: str, knobs: Any = NoKnobs, *, kinds: Iterable[str] | None = None,
                   backbone: str | Iterable[str] | None = None, head: str | Iterable[str] | None = None):
    """Decorator: register a model family built by ``fn(knobs, spec, num_outputs) -> nn.Module``.

    Args:
        name: the family's name (``model.family``); a built-in name is an error.
        knobs: a pydantic model of the family's knobs (plain ``BaseModel`` classes are made strict: unknown
            keys are errors and values frozen, like built-in knobs). Knobs are searchable like any field.
        kinds: the data kinds the family accepts (tabular, signal, image, sequence); default all.
        backbone, head: names of the model's top-level submodules (or parameters) forming its feature
            extractor and its output head, for transfer learning; default: the head is the last child
            module holding parameters, the backbone everything else (see :func:`dnntune.models.model_parts`).

    The builder receives the validated knobs, the :class:`~dnntune.models.InputSpec` (kind, per-sample
    shape, info) and the number of outputs. Each build is checked: the result must be an ``nn.Module`` and
    a forward pass on 2 zero samples must give shape (2, num_outputs); otherwise a ConfigError names the
    plugin module and family.
    """
    from .data.core import KINDS
    from .models.core import MODELS, checked_builder

    allowed = tuple(KINDS if kinds is None else ([kinds] if isinstance(kinds, str) else kinds))

    def deco(fn: Callable) -> Callable:
        module = getattr(fn, "__module__", None) or MAIN
        bad = [k for k in allowed if k not in KINDS]
        if bad or not allowed:
            raise ConfigError(f"plugin {module}: model family {name!r}: kinds {list(allowed)!r}; allowed: "
                              f"{', '.join(KINDS)}")
        _register(MODELS, "model family", name, knobs, fn, checked_builder(fn, module, name), kinds=allowed,
                  backbone=_names(backbone), head=_names(head))
        return fn

    return deco


def register_dataset(name: str, knobs: Any = NoKnobs, *, task: str = "auto", kind: str = "auto"):
    """Decorator: register a dataset built by ``fn(knobs)`` so experiments can name it (``data.name``).

    The builder returns what the Python API's ``data=`` takes: ``(x, y)`` numpy arrays or torch tensors,
    a dict with ``x, y`` and optionally ``x_test, y_test, kind, task, class_names``, a map-style
    ``torch.utils.data.Dataset`` of (input, target) pairs (or a pair of them: train, test), or a
    :class:`~dnntune.data.RawData`. ``task``: classification, regression, multilabel or auto (integer
    labels → classification); ``kind``: tabular, signal, image, sequence or auto (inferred from the shape;
    ``data.kind`` in the experiment overrides it). The splits, normalization and test-once rule are those
    of every built-in dataset.
    """
    from .data.core import DATASETS, KINDS, TASKS

    def deco(fn: Callable) -> Callable:
        module = getattr(fn, "__module__", None) or MAIN
        if task != "auto" and task not in TASKS:
            raise ConfigError(f"plugin {module}: dataset {name!r}: task {task!r}; allowed: auto, {', '.join(TASKS)}")
        if kind != "auto" and kind not in KINDS:
            raise ConfigError(f"plugin {module}: dataset {name!r}: kind {kind!r}; allowed: auto, {', '.join(KINDS)}")

        def builder(knobs):
            from .data.user import as_raw

            try:
                out = fn(knobs)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's code: say whose it is, without a traceback
                raise ConfigError(f"plugin {module}: dataset {name!r}: the builder raised {_where(e)}") from None
            workers = getattr(knobs, "num_workers", 0)
            return as_raw(out, f"dataset {name!r} of plugin {module}", task=task, kind=kind, num_workers=workers)

        _register(DATASETS, "dataset", name, knobs, fn, builder, task="any" if task == "auto" else task,
                  kind="any" if kind == "auto" else kind)
        return fn

    return deco


def _names(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _where(e: BaseException) -> str:
    """``TypeError: message (file.py, line 12)``: the user's exception and where it was raised."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith("<frozen")]
    at = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return f"{type(e).__name__}: {e}{at}"


# --- loading plugin modules -----------------------------------------------------------------------


def entry_points() -> dict[str, Any]:
    """The entry points of group ``dnntune.plugins`` of installed packages, by name (not imported)."""
    from importlib.metadata import entry_points as eps

    return {ep.name: ep for ep in eps(group=ENTRY_POINT_GROUP)}


def loaded() -> dict[str, str]:
    """Plugins imported in this process: name → origin."""
    return dict(_loaded)


def plugin_dirs() -> list[str]:
    """Where this process imported its plugins from: the folders added to ``sys.path`` for plugins found
    beside an experiment, and the import root of every module that registered a family or dataset (a
    user's script may have imported it from its own folder). Worker processes get them on PYTHONPATH."""
    from .data.core import DATASETS
    from .models.core import MODELS

    roots = list(_dirs)
    for entry in [*MODELS, *DATASETS]:
        root = module_root(entry.meta.get("plugin"))
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def module_root(name: str | None) -> str | None:
    """The folder that must be on sys.path to import module ``name`` (None: not imported from a file)."""
    file = getattr(sys.modules.get(name or ""), "__file__", None) if name and name != MAIN else None
    if not file:
        return None
    path = Path(file).resolve()
    depth = len(name.split(".")) - (0 if path.name == "__init__.py" else 1)
    return str(path.parents[depth])


def _find_dir(name: str, dirs: Iterable[Path]) -> Path | None:
    top = name.split(".")[0]
    for d in dirs:
        if (d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file():
            return d
    return None


def load_plugins(names: Iterable[str] | None, base_dir: str | Path | None = None,
                 extra_dirs: Iterable[str | Path] = (), field: str = "plugins", cwd: bool = True) -> list[str]:
    """Import the plugin modules the user named, once each; returns the names imported now.

    A name is an entry point of group ``dnntune.plugins`` or a module, looked up on ``sys.path``, then in
    ``base_dir`` (the experiment file's folder), then in ``extra_dirs``, then (``cwd``) in the current directory.

    Raises:
        ConfigError: not a list of names, the module is not found, or importing it failed (the message
            names the plugin and the error in it, without a traceback).
    """
    if names is None:
        return []
    if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{field}: expected a list of module names (e.g. [my_models]), got {names!r}")
    done = []
    for name in names:
        if name in _loaded:
            continue
        if name.endswith(".py") or "/" in name or os.sep in name:
            raise ConfigError(f"{field}: {name!r}: give a module name (e.g. {Path(name).stem}), found on "
                              "PYTHONPATH or beside the experiment file")
        _load_one(name, base_dir, extra_dirs, cwd)
        done.append(name)
    return done


def _load_one(name: str, base_dir, extra_dirs, cwd: bool) -> None:
    eps = entry_points()
    if name in eps:
        ep = eps[name]
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type(sys)):
                obj()  # an entry point may name a function that registers
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"plugin {name} (entry point {ep.value}): importing it failed: {_where(e)}") from None
        _loaded[name] = f"entry point {ep.value}"
        return
    if name in sys.modules and name != MAIN:
        _loaded[name] = getattr(sys.modules[name], "__file__", None) or name
        return
    found = _find_spec(name)
    if found is None:
        dirs = [Path(d) for d in ([base_dir] if base_dir else []) + list(extra_dirs)] + ([Path.cwd()] if cwd else [])
        d = _find_dir(name, dirs)
        if d is None:
            where = ", ".join(str(x) for x in dirs)
            raise ConfigError(f"plugin {name}: module not found on PYTHONPATH (sys.path) or in {where}; no "
                              f"entry point of that name in group {ENTRY_POINT_GROUP} either"
                              + (f" (installed: {', '.join(sorted(eps))})" if eps else ""))
        path = str(d.resolve())
        if path not in sys.path:
            sys.path.insert(0, path)
        if path not in _dirs:
            _dirs.append(path)
        importlib.invalidate_caches()
    try:
        module = importlib.import_module(name)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module: its error, named, without a traceback
        raise ConfigError(f"plugin {name}: importing it failed: {_where(e)}") from None
    _loaded[name] = getattr(module, "__file__", None) or name


def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return None


def used_plugins(raw: dict) -> list[str]:
    """The plugin modules of the model families and datasets an experiment or recipe names (a name or a
    ``{choice: [...]}``), registered in an importable module (not the user's ``__main__``)."""
    from .data.core import DATASETS
    from .models.core import MODELS

    found = []
    for section, key, registry in (("model", "family", MODELS), ("data", "name", DATASETS)):
        value = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else raw.get(section)
        options = value.get("choice", []) if isinstance(value, dict) else [value]
        for opt in options:
            if isinstance(opt, str) and opt in registry:
                module = registry.get(opt).meta.get("plugin")
                if module and module != MAIN and module not in found:
                    found.append(module)
    return found


def main_registrations(raw: dict) -> list[str]:
    """Families / datasets an experiment names that were registered in ``__main__`` (a script): other
    processes cannot import them."""
    from .data.core import DATASETS
    from .models.core import MODELS

    out = []
    for section, key, registry in (("model", "family", MODELS), ("data", "name", DATASETS)):
        sec = raw.get(section)
        value = sec.get(key) if isinstance(sec, dict) else sec
        for opt in value.get("choice", []) if isinstance(value, dict) else [value]:
            if isinstance(opt, str) and opt in registry and registry.get(opt).meta.get("plugin") == MAIN:
                out.append(f"{section}.{key} {opt!r}")
    return out


@dataclass(frozen=True)
class PluginRecord:
    """Which plugin built a run's model: recorded in summary.json as ``model_plugin``."""

    module: str
    family: str
    path: str | None = None  # the folder it was imported from when it was found beside the experiment

    def to_dict(self) -> dict:
        return {"module": self.module, "family": self.family, **({"path": self.path} if self.path else {})}


def model_plugin(family: str) -> dict | None:
    """``{module, family[, path]}`` for a plugin family, None for a built-in one."""
    from .models.core import MODELS

    if family not in MODELS:
        return None
    module = MODELS.get(family).meta.get("plugin")
    if module is None:
        return None
    return PluginRecord(module, family, module_root(module)).to_dict()


def describe_entry_points() -> list[dict]:
    """Entry points of group ``dnntune.plugins`` with whether they are loaded (for ``dnntune models``);
    nothing is imported."""
    rows = []
    for name, ep in sorted(entry_points().items()):
        dist = getattr(ep, "dist", None)
        rows.append({"name": name, "value": ep.value, "loaded": name in _loaded,
                     "distribution": f"{dist.name} {dist.version}" if dist is not None else ""})
    return rows
