"""``dnntune ablate``: what each strategy bought, measured over seeds.

``load_ablation(PATH)`` reads an ablation file (its format: :mod:`._spec`) into an :class:`AblationSpec`;
``plan(spec)`` gives the rows of the cumulative and leave-one-out views; ``ablate(spec)`` trains every row
with every seed and returns an :class:`AblationResult`; ``table_rows(result)`` is its numbers as flat data.
Rendering them (Markdown, CSV, JSON, the bar chart, the terminal table) is :mod:`dnntune.report._ablation`'s.
"""

from __future__ import annotations

from ._plan import Row, plan, recipe_key
from ._run import AblationResult, ablate, run_job
from ._spec import FILE_KEYS, AblationSpec, load_ablation, seed_baseline
from ._statistics import PERCENT_METRICS, bought, metric_interval, t_interval, table_rows
from ._strategies import ORDER, STRATEGIES, Fields, assemble, describe_change, split, strategy_of

__all__ = ["FILE_KEYS", "ORDER", "PERCENT_METRICS", "STRATEGIES", "AblationResult", "AblationSpec", "Fields", "Row",
           "ablate", "assemble", "bought", "describe_change", "load_ablation", "metric_interval", "plan",
           "recipe_key", "run_job", "seed_baseline", "split", "strategy_of", "t_interval", "table_rows"]
