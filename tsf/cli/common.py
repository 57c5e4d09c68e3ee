"""Flag groups that several commands share, written once: device and precision, clip sampling,
``KEY=VALUE`` assignments, and the ``--config``/``--set`` settings files of ``train``/``evaluate``.

Torch-free at import (``--help`` stays instant): the values are checked by the library when a
command runs (``tsf.runtime.resolve_precision``, ``tsf.model.TimeSformerConfig``...).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Optional, Union

from ..data.sampling import COVER, SAMPLINGS

if TYPE_CHECKING:  # tsf.recipes loads the model (torch): imported where a command runs
    from ..recipes import Recipe

# flags that are never settings in a file: how to read files, and --resume (which takes the run's own)
NOT_SETTINGS = ("help", "config", "set", "resume")


def error_message(error: BaseException) -> str:
    """What ``error`` says, without the worker traceback a ``DataLoader`` wraps around an error raised
    in one of its worker processes (the message of the original error is kept)."""
    message = str(error) or type(error).__name__
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    if "Original Traceback" in message and marker in message:
        message = message[message.rindex(marker) + len(marker):]
    return message.strip()


def add_debug_flag(parser) -> None:
    """``--debug``: on any command level, so it may follow the command's own arguments."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error (also: TSF_DEBUG=1)")


def add_device_flags(parser, default: Optional[str] = "auto") -> None:
    """``--device`` and ``--precision``; ``default=None`` for commands whose settings files may set them."""
    shown = f" (default {default})" if default else " (default auto)"
    parser.add_argument("--device", default=default, help=f"auto (CUDA when available, else CPU), cpu, cuda or cuda:N{shown}")
    parser.add_argument("--precision", default=default,
                        help=f"auto (CUDA: bf16 autocast, fp16 on GPUs without bf16; CPU: bf16 for evaluation and "
                             f"prediction where the CPU has bf16 matrix units, AMX-BF16 or AVX512-BF16, else fp32; "
                             f"CPU training: fp32), fp32, bf16 or fp16 (CUDA){shown}")


def add_checkpoint_flags(parser) -> None:
    """How a checkpoint is read: ``--num-heads`` (not in the weights) and ``--trust-checkpoint``."""
    parser.add_argument("--num-heads", type=positive_int,
                        help="attention heads of a checkpoint whose heads are not 64 wide (default: embed_dim // 64, "
                             "with a warning when the checkpoint does not record it)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="load a checkpoint that holds Python objects beyond tensors (unpickling can run code: "
                             "only for files from a source you trust)")


def data_location(text: str):
    """``--data``: a data or shard folder (``Path``), or a brace pattern / URL of shards (``tsf.data.sources``)."""
    from ..data.sources import data_location as location

    return location(text)


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def add_sampling_flags(parser) -> None:
    """How clips are drawn from a video; unset flags keep the checkpoint's own sampling (``sampling_from_flags``)."""
    parser.add_argument("--sampling-rate", type=float,
                        help="video frames per clip frame, dense sampling (default: the training run's or zoo entry's, else 1)")
    parser.add_argument("--target-fps", type=float,
                        help="count --sampling-rate at this frame rate (default: the training run's or zoo entry's, else each video's own)")
    parser.add_argument("--sampling", choices=SAMPLINGS, help="clip sampling (default: as --sampling-rate)")


def sampling_from_flags(sampling: dict, args: argparse.Namespace) -> dict:
    """A checkpoint's clip sampling (``tsf.evaluate.load_model``) with the sampling flags given on top."""
    given = {key: getattr(args, key) for key in ("sampling_rate", "sampling", "target_fps") if getattr(args, key) is not None}
    return {**sampling, **given}


def temporal_clips_value(text: str) -> Union[int, str]:
    """``--temporal-clips``: a positive count or ``cover``."""
    if text == COVER:
        return COVER
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive number of clips nor {COVER!r}") from None


def parse_assignments(items: list[str], flag: str) -> dict:
    """``KEY=VALUE`` items as a dict of YAML values (``KEY=`` is None).

    Raises:
        RecipeError: an item without ``=`` or key, or a value that is not YAML.
    """
    import yaml

    from ..recipes import RecipeError

    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} batch_size=4")
        try:
            values[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise RecipeError(f"{flag} {item!r}: the value is not YAML ({error})") from error
    return values


# -- --config RECIPE and --set KEY=VALUE ------------------------------------------------------------
def add_config_flags(parser: argparse.ArgumentParser) -> None:
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
        args: parsed by a parser that ``add_config_flags`` prepared.
        command: ``train`` or ``evaluate``; the recipe must be one of its recipes.

    Returns:
        The recipe of ``--config``, or None.

    Raises:
        RecipeError: unknown key (with the nearest valid one), a value the flag would refuse, a
            recipe of the other command, ``--config``/``--set`` with ``--resume``.
    """
    from ..recipes import RESOLVED_FILE, RecipeError, load_recipe, suggest

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
    layers = [(parse_assignments(args.set, "--set"), "--set")]
    if recipe is not None:
        layers.append((recipe.settings, str(recipe.path)))
    given = {dest for dest, action in actions.items() if getattr(args, dest) != action.default}
    for values, source in layers:  # highest precedence first: a key taken stays taken
        for key, value in values.items():
            if key not in actions:
                raise RecipeError(f"{source}: unknown key {key!r}{suggest(key, actions)} "
                                  f"(keys are the flags of `python -m tsf {command} --help`, with _ for -)")
            if key in given:
                continue
            given.add(key)
            if value == [] and actions[key].nargs == "+":  # an empty list: none given (RUN_DIR/config.yaml writes it)
                continue
            if value is not None:  # null: the default
                setattr(args, key, _coerce(actions[key], value, source, key))
    return recipe


def _coerce(action: argparse.Action, value: Any, source: str, key: str) -> Any:
    """``value`` as the flag of ``action`` would have parsed it (type, count, choices)."""
    from ..recipes import RecipeError

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
