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

import argparse
import difflib
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
RECIPE_COMMANDS = ("train", "evaluate")
RESOLVED_FILE = "config.yaml"  # what tsf train writes into the run folder
# the about: section; command and reproduces are required
ABOUT_KEYS = ("command", "reproduces", "paper_top1", "official", "source", "effective")
# flags that are never settings in a file: how to read files, and --resume (which takes the run's own)
NOT_SETTINGS = ("help", "config", "set", "resume")


class RecipeError(ValueError):
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
    import yaml

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
        raise RecipeError(f"{path}: about: has unknown keys {unknown}{_suggest(unknown[0], ABOUT_KEYS)}; "
                          f"valid: {', '.join(ABOUT_KEYS)}")
    if about.get("command") not in RECIPE_COMMANDS or not about.get("reproduces"):
        raise RecipeError(f"{path}: about: needs command (one of {', '.join(RECIPE_COMMANDS)}; got "
                          f"{about.get('command')!r}) and reproduces (what the recipe is)")
    return Recipe(name=path.stem, path=path, about=about, settings=content)


def list_recipes() -> list[Recipe]:
    return [load_recipe(name) for name in recipe_names()]


# -- applying a recipe to a command's arguments ------------------------------------------------
def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--set`` for a command whose other flags are its settings.

    Settings are the command's flags; a flag counts as given when its value differs from its
    default, so flags that files may set default to None (the command fills in its defaults
    after ``apply_config``).
    """
    group = parser.add_argument_group("config files")
    group.add_argument("--config", metavar="RECIPE_OR_FILE",
                       help="take settings from a recipe (python -m tsf recipes lists them) or a YAML file of "
                            "flag names; flags and --set override it")
    group.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                       help="override a setting of --config (or give one): a flag name with _ for -, a YAML "
                            "value; KEY=null drops the file's value. Flags override --set")
    parser.set_defaults(_config_parser=parser)


def apply_config(args: argparse.Namespace, command: str) -> Optional[Recipe]:
    """Fill the settings of ``args`` that no flag gave from ``--set``, then from ``--config``.

    Args:
        args: parsed by a parser that ``add_config_arguments`` prepared.
        command: ``train`` or ``evaluate``; the recipe must be one of its recipes.

    Returns:
        The recipe of ``--config``, or None.

    Raises:
        RecipeError: unknown key (with the nearest valid one), a value the flag would refuse, a
            recipe of the other command, ``--config``/``--set`` with ``--resume``.
    """
    if not args.config and not args.set:
        return None
    if getattr(args, "resume", None) is not None:
        raise RecipeError(f"--resume continues {args.resume} with the settings it started with "
                          f"({args.resume / RESOLVED_FILE}); remove --config and --set")
    # argparse lists a parser's flags only in _actions; each knows its dest, default, type, count and choices
    actions = {a.dest: a for a in args._config_parser._actions if a.dest not in NOT_SETTINGS and not a.dest.startswith("_")}
    recipe = load_recipe(args.config) if args.config else None
    if recipe is not None and recipe.command != command:
        raise RecipeError(f"{recipe.path} is a recipe for `tsf {recipe.command}`: run python -m tsf "
                          f"{recipe.command} --config {args.config}")
    layers = [(_parse_sets(args.set), "--set")]
    if recipe is not None:
        layers.append((recipe.settings, str(recipe.path)))
    given = {dest for dest, action in actions.items() if getattr(args, dest) != action.default}
    for values, source in layers:  # highest precedence first: a key taken stays taken
        for key, value in values.items():
            if key not in actions:
                raise RecipeError(f"{source}: unknown key {key!r}{_suggest(key, actions)} "
                                  f"(keys are the flags of `python -m tsf {command} --help`, with _ for -)")
            if key in given:
                continue
            given.add(key)
            if value is not None:  # null: the default
                setattr(args, key, _coerce(actions[key], value, source, key))
    return recipe


def _parse_sets(items: list[str]) -> dict:
    import yaml

    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: write KEY=VALUE, e.g. --set batch_size=4")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise RecipeError(f"--set {item!r}: the value is not YAML ({error})") from error
    return values


def _coerce(action: argparse.Action, value: Any, source: str, key: str) -> Any:
    """``value`` as the flag of ``action`` would have parsed it (type, count, choices)."""
    def fail(why: str) -> RecipeError:
        return RecipeError(f"{source}: {key}: {value!r} {why}")

    if action.nargs == 0:  # a switch: --flag / --no-flag, store_true
        if not isinstance(value, bool):
            raise fail("is not true or false")
        return value
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = value if isinstance(value, list) else [value]
        if isinstance(action.nargs, int) and len(items) != action.nargs:
            raise fail(f"needs {action.nargs} values")
        if action.nargs == "+" and not items:
            raise fail("needs at least one value")
        return [_convert(action, item, fail) for item in items]
    if isinstance(value, (list, dict)):
        raise fail("is a list or mapping; this key takes one value")
    return _convert(action, value, fail)


def _convert(action: argparse.Action, item: Any, fail) -> Any:
    kind = action.type or str
    if kind is int and isinstance(item, float) and not item.is_integer():
        raise fail("is not a whole number")
    if isinstance(item, bool) and kind in (int, float):
        raise fail("is not a number")
    try:
        converted = kind(item)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
        raise fail(f"is not a valid value ({error})") from error
    if action.choices is not None and converted not in action.choices:
        raise fail(f"is not one of {', '.join(map(str, action.choices))}")
    return converted


def _suggest(key: str, valid) -> str:
    near = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


def write_resolved(path: Path, settings: dict, about: dict) -> None:
    """A run's resolved settings as a recipe file (``--config`` reruns it).

    Args:
        path: the file to write (``RUN_DIR/config.yaml``).
        settings: key -> plain value (paths as strings, tuples as lists).
        about: the ``about:`` section (where the settings came from, the effective numbers).
    """
    import yaml

    header = ("# The resolved settings of this run (flags > --set > --config file > defaults).\n"
              "# Rerun it: python -m tsf train --config THIS_FILE --out NEW_RUN_DIR\n")
    body = yaml.safe_dump({"about": about, **settings}, sort_keys=False, default_flow_style=None)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + body)
    tmp.replace(path)


# -- GPU memory estimates --------------------------------------------------------------------------
# Bytes a training step keeps per token and block, per unit of width D, under bf16 autocast with the
# fused (flash / memory-efficient) attention, counted from what the model's lean training path saves
# for backward: each LayerNorm+Linear keeps its fp32 input (4), each attention its bf16 q, k, v (6)
# and output (2), the MLP its bf16 4D hidden layer (8), divided blocks also temporal_fc's input (2).
_SAVED_BYTES_PER_WIDTH = {"divided_space_time": 4 + 6 + 2 + 2 + 4 + 6 + 2 + 4 + 8, "space_only": 4 + 6 + 2 + 4 + 8,
                          "joint_space_time": 4 + 6 + 2 + 4 + 8}
# Inference keeps nothing; the peak is about one block's working set: fp32 stream, qkv, output, hidden.
_INFERENCE_BYTES_PER_WIDTH = 4 + 6 + 2 + 8
_STATE_BYTES = {"sgd": 4 + 4 + 4, "adamw": 4 + 4 + 8}  # fp32 weights, gradients, optimiser state
_CUDA_OVERHEAD_GIB = 1.0  # CUDA context, kernel workspaces, allocator slack


def parameter_count(config) -> int:
    """Parameters of a ``TimeSformerConfig`` (the model's layers, counted without building it)."""
    D, patch, frames = config.embed_dim, config.patch_size, config.num_frames
    hidden = int(D * config.mlp_ratio)
    bias = D if config.qkv_bias else 0
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731 - a formula, named for reading
    attention = 3 * D * D + 3 * bias + linear(D, D)
    block = 2 * D + attention + 2 * D + linear(D, hidden) + linear(hidden, D)
    if config.attention_type == "divided_space_time":
        block += 2 * D + attention + linear(D, D)  # temporal norm, attention and fc
    embeddings = config.in_chans * patch * patch * D + D + D + (config.num_patches + 1) * D
    if config.attention_type != "space_only":
        embeddings += frames * D
    head = linear(D, config.num_classes) if config.num_classes else 0
    return embeddings + config.depth * block + 2 * D + head


def tokens_per_clip(config) -> int:
    """Tokens a block processes per clip (space-only: each frame's sequence with its class token)."""
    if config.attention_type == "space_only":
        return config.num_frames * (config.num_patches + 1)
    return config.num_frames * config.num_patches + 1


def estimate_gpu_memory_gib(config, batch_size: int, optimizer: Optional[str]) -> float:
    """Estimated peak GPU memory of one process, in GiB: training (``optimizer`` given) keeps
    fp32 weights, gradients and optimiser state plus the activations saved for backward; inference
    keeps the weights and one block's working set. bf16 autocast (its bf16 weight copies
    included) and fused attention, as a recipe runs on a GPU; plus the CUDA context. An estimate
    from counting tensors, not a measurement: allocator fragmentation and kernel workspaces vary
    with the GPU and the PyTorch version.

    Args:
        config: the ``TimeSformerConfig``.
        batch_size: clips per forward pass on the process.
        optimizer: ``sgd`` or ``adamw`` for a training step; None for inference.
    """
    params = parameter_count(config)
    tokens = tokens_per_clip(config) * batch_size
    if optimizer is None:
        state = params * (4 + 2)
        activations = tokens * config.embed_dim * _INFERENCE_BYTES_PER_WIDTH
    else:
        state = params * (_STATE_BYTES[optimizer] + 2)
        activations = tokens * config.embed_dim * _SAVED_BYTES_PER_WIDTH[config.attention_type] * config.depth
    return (state + activations) / 2**30 + _CUDA_OVERHEAD_GIB


def recipe_model_config(recipe: Recipe):
    """The ``TimeSformerConfig`` a recipe's settings describe, without loading weights: its preset
    with its model keys, or for a zoo checkpoint the entry's architecture (the shipped recipes
    name one of these; a file path would have to be read)."""
    from dataclasses import replace

    from .model import PRESETS
    from .zoo import ZOO

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


# -- python -m tsf recipes -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="print this recipe's file (default: list all recipes)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.name:
            recipe = load_recipe(args.name)
            print(f"# {recipe.path}\n{recipe.path.read_text()}", end="")
            return 0
        rows = [_table_row(recipe) for recipe in list_recipes()]
    except RecipeError as error:
        print(f"tsf recipes: {error}", file=sys.stderr)
        return 2
    header = ("recipe", "reproduces", "paper top-1", "GPU memory (estimate)")
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    notes = ("GPU memory: estimated peak per GPU at the recipe's batch_size clips per process (training: weights, "
             "gradients, optimiser state and saved activations; evaluation: one forward pass), bf16 autocast and fused "
             "attention; counted, not measured. Lower --batch-size (the global batch stays, by gradient accumulation) "
             "or add --gradient-checkpointing to fit a smaller GPU.")
    print("\n" + textwrap.fill(notes, 100))
    print("Run one: python -m tsf train (or evaluate) --config RECIPE --data DIR [--out RUN_DIR]\n"
          "Print one: python -m tsf recipes RECIPE")
    return 0


def _table_row(recipe: Recipe) -> tuple[str, str, str, str]:
    top1 = recipe.about.get("paper_top1")
    batch = recipe.settings.get("batch_size", 8)  # both commands default to 8 clips per pass
    training = recipe.command == "train"
    optimizer = recipe.settings.get("optimizer", "sgd") if training else None
    memory = estimate_gpu_memory_gib(recipe_model_config(recipe), batch, optimizer)
    memory_text = f"~{memory:.0f} GiB/GPU ({'train' if training else 'eval'}, {batch} clips)"
    return recipe.name, recipe.about["reproduces"], "-" if top1 is None else f"{top1:.1f}", memory_text
