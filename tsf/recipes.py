"""Recipes: the paper's experiments as config files, and config-file runs of ``tsf train`` / ``tsf evaluate``.

A recipe is a YAML file whose keys are the command's own flags (``--sampling-rate 32`` is
``sampling_rate: 32``) plus an ``about:`` section that says what it is::

    about:
      command: train                      # or evaluate: the command that runs it
      reproduces: TimeSformer, Kinetics-400, ...
      paper_top1: 78.0                    # what the paper reports for it (null: nothing)
      official: configs/Kinetics/TimeSformer_divST_8x32_224.yaml
    model: base_8x224
    sampling_rate: 32
    ...

The paper's recipes ship in ``tsf/recipes/*.yaml``: ``python -m tsf recipes`` lists them,
``python -m tsf recipes NAME`` prints one. A run takes a recipe name or a file::

    python -m tsf train --config k400_divided_8x32_224 --set batch_size=4 --data DIR --out RUN_DIR

Each setting comes from, in this order of precedence: a flag, a ``--set KEY=VALUE`` (YAML
values: ``--set short_side_range=[256,320]``, ``--set init=null`` to drop the file's value),
the file, the command's default. Values are checked as the flags check them, and an unknown key
is an error that suggests the nearest valid one. ``tsf train`` writes the resolved settings to
``RUN_DIR/config.yaml``, itself a recipe that reruns the run (its ``about:`` adds ``source``, where
the settings came from, and ``effective``, what the run's number of processes made of them).

The training recipes state the global batch (``global_batch: 64``, which the official configs
reach by hidden gradient accumulation) and the lr at it (``lr: 0.005``, ``lr_reference_batch: 64``):
on any number of processes the accumulation is ``global_batch / (batch_size x processes)``, and a
different ``global_batch`` scales the lr linearly (``TrainConfig.for_world``).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import yaml

from .errors import ConfigError
from .model import PRESETS, TimeSformerConfig
from .zoo import ZOO

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPE_COMMANDS = ("train", "evaluate")
RESOLVED_FILE = "config.yaml"  # what tsf train writes into the run folder
# the about: section; command and reproduces are required
ABOUT_KEYS = ("command", "reproduces", "paper_top1", "official", "source", "effective")


class RecipeError(ConfigError):
    """A recipe or ``--set`` that cannot be used; the message names the file, key and value and the fix."""


@dataclass(frozen=True)
class Recipe:
    """One recipe file.

    Args:
        name: the file's stem (what ``--config`` accepts for shipped recipes).
        path: the file.
        about: the ``about:`` section (``command``, ``reproduces``, ``paper_top1``, ``official``...).
        settings: every other key: flag name (``_`` for ``-``) -> value, as written in the file.
    """

    name: str
    path: Path
    about: dict
    settings: dict

    @property
    def command(self) -> str:
        return self.about["command"]


def recipe_names() -> list[str]:
    """The shipped recipes, sorted."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: Union[str, Path]) -> Recipe:
    """A shipped recipe by name, or any recipe file by path.

    Raises:
        RecipeError: no such recipe (with the nearest names), or the file is not a recipe.
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = RECIPES_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            near = difflib.get_close_matches(str(name_or_path), recipe_names(), n=3, cutoff=0.4)
            hint = f"; did you mean {' or '.join(near)}?" if near else ""
            raise RecipeError(f"--config {name_or_path}: no such file and no such recipe{hint} "
                              f"(`python -m tsf recipes` lists the recipes)")
        path = shipped
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(content, dict) or not isinstance(content.get("about"), dict):
        raise RecipeError(f"{path} is not a recipe: it needs an `about:` section with command and reproduces "
                          f"(see any file in {RECIPES_DIR})")
    about = content.pop("about")
    unknown = [k for k in about if k not in ABOUT_KEYS]
    if unknown:
        raise RecipeError(f"{path}: about: has unknown keys {unknown}{suggest(unknown[0], ABOUT_KEYS)}; "
                          f"valid: {', '.join(ABOUT_KEYS)}")
    if about.get("command") not in RECIPE_COMMANDS or not about.get("reproduces"):
        raise RecipeError(f"{path}: about: needs command (one of {', '.join(RECIPE_COMMANDS)}; got "
                          f"{about.get('command')!r}) and reproduces (what the recipe is)")
    return Recipe(name=path.stem, path=path, about=about, settings=content)


def list_recipes() -> list[Recipe]:
    return [load_recipe(name) for name in recipe_names()]


def suggest(key: str, valid) -> str:
    """``"; did you mean 'x'?"`` for the nearest of ``valid``, or nothing."""
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


def write_resolved(path: Path, settings: dict, about: dict) -> None:
    """A run's resolved settings as a recipe file (``--config`` reruns it).

    Args:
        path: the file to write (``RUN_DIR/config.yaml``).
        settings: key -> plain value (paths as strings, tuples as lists).
        about: the ``about:`` section (where the settings came from, the effective numbers).
    """
    header = ("# The resolved settings of this run (flags > --set > --config file > defaults).\n"
              "# Rerun it: python -m tsf train --config THIS_FILE --out NEW_RUN_DIR\n")
    body = yaml.safe_dump({"about": about, **settings}, sort_keys=False, default_flow_style=None)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + body)
    tmp.replace(path)


def recipe_model_config(recipe: Recipe) -> TimeSformerConfig:
    """The ``TimeSformerConfig`` a recipe's settings describe, without loading weights: its preset
    with its model keys, or for a zoo checkpoint the entry's architecture (the shipped recipes
    name one of these; a file path would have to be read)."""
    settings = recipe.settings
    model_keys = {k: settings[k] for k in ("num_frames", "img_size", "attention_type") if settings.get(k) is not None}
    source = settings.get("model") or settings.get("init") or settings.get("checkpoint")
    if source in PRESETS:
        return replace(PRESETS[source], **model_keys)
    entry = ZOO.get(source)
    if entry is None:
        raise RecipeError(f"{recipe.path}: cannot tell its model: model: is not a preset and init:/checkpoint: "
                          f"{source!r} is not a zoo name (tsf.list_models())")
    base = PRESETS["base_8x224"]  # every released TimeSformer is ViT-B/16
    return replace(base, **{"num_frames": entry.num_frames, "img_size": entry.img_size,
                            "num_classes": entry.num_classes, **model_keys})
