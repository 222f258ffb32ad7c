"""Recipes shipped inside the package (the demo's default); copies live in examples/."""

from __future__ import annotations

from importlib import resources

import yaml


def load_preset(name: str) -> dict:
    """The preset recipe ``name`` (e.g. ``mnist1d``) as plain data."""
    text = resources.files(__package__).joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text)
