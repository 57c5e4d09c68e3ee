"""`python -m tsf train`: train or fine-tune on a data folder, from flags or a recipe (``--config``);
``--resume RUN_DIR`` continues a run. Every ``TrainConfig`` and ``VideoDataConfig`` field is a flag
with the field's own help. Multi-GPU / multi-node: ``torchrun ... -m tsf train ...``.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

from ..data.config import VideoDataConfig
from ..training.config import TrainConfig
from .common import add_checkpoint_flags, add_config_flags, apply_config, data_location, error_message

RESUME_OVERRIDABLE = ("device", "num_workers", "progress", "tensorboard")
# run flags that are TimeSformerConfig fields (given: they override the preset's or checkpoint's)
# what a run writes into its folder: a new run refuses to start over them without --overwrite
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "config.yaml")
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # --tensorboard's event files, beside metrics.jsonl
MODEL_OPTIONS = ("num_heads", "num_frames", "img_size", "attention_type", "drop_path_rate", "mean", "std")


def _add_dataclass_flags(group, cls) -> None:
    """One flag per field of ``cls``, default None (so that given flags can be told apart)."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default_factory is MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {_show(default)})".replace("%", "%%")
        if f.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif str(f.type).startswith("tuple"):
            kind = int if str(f.type).startswith("tuple[int") else float
            group.add_argument(flag, type=kind, nargs="+", default=None, metavar="X", help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            group.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def _show(value) -> str:
    return (" ".join(map(str, value)) or "none") if isinstance(value, tuple) else str(value)


def _given(args: argparse.Namespace, cls) -> dict:
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "The paper's recipes: python -m tsf recipes, then --config RECIPE [--set KEY=VALUE ...]. "
        "Tiny model on the synthetic data (CPU, minutes): --model tiny --optimizer adamw --lr 2e-3 "
        "--weight-decay 0.05 --schedule cosine --warmup-epochs 1 --grad-clip 1.0 --batch-size 32 --epochs 10. "
        "Multi-GPU / multi-node: torchrun --nnodes N --nproc-per-node G -m tsf train ... (the global batch is "
        "batch-size x grad-accum-steps x processes, or --global-batch)."
    )
    run = parser.add_argument_group("run")
    run.add_argument("--data", type=data_location, help="data folder with train.csv, val.csv and classes.txt; "
                     "or shards (python -m tsf data shard): their folder, or a brace pattern of shard paths or URLs "
                     "(pipe:CMD, http(s)://) with shards.json beside them")
    run.add_argument("--out", type=Path, help="run folder: metrics.jsonl, summary.json, last.pt, best.pt")
    run.add_argument("--overwrite", action="store_true",
                     help="start over in an --out that holds an earlier run's files (they are deleted first)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help=f"continue the run in RUN_DIR from its last.pt with its saved settings (only "
                          f"{', '.join('--' + n.replace('_', '-') for n in RESUME_OVERRIDABLE)} may be given)")
    run.add_argument("--model", help="train this preset from scratch (tsf.PRESETS: tiny, micro, base_8x224, ...)")
    run.add_argument("--imagenet-init", metavar="VIT",
                     help="with --model: start from an ImageNet ViT, as the paper trained: a weights file or "
                          "timm:NAME (the paper's: timm:vit_base_patch16_224.orig_in21k_ft_in1k)")
    run.add_argument("--init", help="fine-tune from this checkpoint or zoo name; a new head when the classes differ")
    add_checkpoint_flags(run)
    run.add_argument("--num-frames", type=int, help="frames per clip (default: the model's); resizes an --init model's time embedding")
    run.add_argument("--img-size", type=int, help="crop size (default: the model's); resizes an --init model's position embedding")
    run.add_argument("--attention-type", help="attention scheme of a --model preset: divided_space_time, space_only or "
                                             "joint_space_time (default: the preset's)")
    run.add_argument("--drop-path-rate", type=float, help="stochastic depth of the model (default: the preset's or checkpoint's)")
    run.add_argument("--mean", type=float, nargs=3, metavar="X", help="input normalisation mean per channel (default: the model's, 0.45)")
    run.add_argument("--std", type=float, nargs=3, metavar="X", help="input normalisation std per channel (default: the model's, 0.225)")
    run.add_argument("--overfit-batch", type=int, nargs="?", const=100, default=0, metavar="STEPS",
                     help="sanity check: train STEPS (default 100) steps on one fixed batch of batch-size clips, "
                          "without augmentation or checkpoints; succeeds when it reaches 100%% top-1 on it")
    _add_dataclass_flags(parser.add_argument_group("training (TrainConfig)"), TrainConfig)
    _add_dataclass_flags(parser.add_argument_group("video data"), VideoDataConfig)
    add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.signals import stop_on_signals

    # from the start: a SIGTERM/SIGINT/SIGUSR1 while the run is set up stops it after its first step
    with stop_on_signals():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .. import runtime
    from ..data import BadVideosError
    from ..errors import TsfError
    from ..training import NonFiniteLossError
    from ..training.signals import INTERRUPTED_EXIT_CODE, TrainingInterrupted

    try:
        recipe = apply_config(args, "train")
        trainer = _resume_trainer(args) if args.resume is not None else _new_trainer(args, recipe)
    except RunFinished as finished:
        runtime.teardown(synchronize=False)
        print(f"tsf train: {finished}")
        return 0
    except (TsfError, ValueError, FileNotFoundError) as error:
        print(f"tsf train: {error_message(error)}", file=sys.stderr)
        runtime.teardown(synchronize=False)
        return 2
    try:
        summary = trainer.fit()
    except TrainingInterrupted as error:
        runtime.teardown()  # every rank waits for rank 0's last.pt before any exits (torchrun ends the rest)
        if trainer.is_main:
            hint = f"; continue with: python -m tsf train --resume {trainer.run_dir}" if error.checkpoint else ""
            print(f"tsf train: {error}{hint}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except (NonFiniteLossError, BadVideosError) as error:
        print(f"tsf train: {error_message(error)}", file=sys.stderr)
        runtime.teardown(synchronize=False)
        return 1
    runtime.teardown()
    if not trainer.is_main:
        return 0
    if trainer.run_info.get("overfit_batch"):
        top1 = summary["final"].get("val_top1", 0.0)
        print(f"overfit-batch: top-1 {top1:.3f} on the batch of {trainer.config.batch_size} clips after {summary['steps']} steps")
        if top1 < 1.0:
            print("the model could not fit one batch: check the labels, the normalisation and the learning rate "
                  "(--lr), or give it more --overfit-batch STEPS", file=sys.stderr)
            return 1
        return 0
    best = ("no validation set" if summary["best_val_top1"] is None
            else f"best val top-1 {summary['best_val_top1']:.4f} (epoch {summary['best_epoch']})")
    print(f"tsf train: {summary['steps']} steps in {summary['train_time_s']:.1f} s; {best}; {trainer.run_dir}")
    return 0


def _new_trainer(args: argparse.Namespace, recipe=None):
    import torch

    from ..build import build_model
    from ..data import build_video_datasets, data_folder_classes
    from ..training import LAST, Checkpointer, Trainer, default_callbacks

    if args.data is None or args.out is None:
        raise ValueError("give --data DIR and --out RUN_DIR (or --resume RUN_DIR)")
    earlier = [args.out / name for name in RUN_FILES if (args.out / name).exists()]
    earlier += sorted(args.out.glob(TENSORBOARD_EVENTS))
    if earlier and not args.overwrite:
        resume = f"continue it with --resume {args.out}, " if (args.out / LAST).is_file() else ""
        from ..errors import OutputExistsError

        raise OutputExistsError(f"{args.out} already holds a run's files ({', '.join(p.name for p in earlier)}); "
                                f"{resume}choose another --out, or pass --overwrite to delete them and start over")
    given = _given(args, TrainConfig)
    if args.overfit_batch:
        # every epoch is the one batch: epochs = steps; validate (on that batch) at the end only
        given.update(epochs=args.overfit_batch, max_steps=0, schedule="constant", warmup_epochs=0.0,
                     val_every=args.overfit_batch, log_every=min(given.get("log_every", 10), 10))
    config = TrainConfig(**given)
    data_config = VideoDataConfig(**_given(args, VideoDataConfig))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k in MODEL_OPTIONS if (v := getattr(args, k)) is not None}
    class_names = data_folder_classes(args.data)
    torch.manual_seed(config.seed)  # the same initial weights on every process
    model = build_model(args.model, args.init, class_names, args.imagenet_init, args.trust_checkpoint, **overrides)
    train_set, val_set = build_video_datasets(args.data, model.config, data_config, config.seed,
                                              config.batch_size if args.overfit_batch else 0,
                                              batch_size=config.batch_size, num_workers=config.num_workers)
    run_info = {
        "data": str(args.data), "data_config": data_config.to_dict(),
        "model": args.model, "init": args.init, "imagenet_init": args.imagenet_init, "overfit_batch": args.overfit_batch,
    }
    callbacks = None
    if args.overfit_batch:  # a sanity check, not a model: metrics only (an epoch is one step here)
        callbacks = [c for c in default_callbacks(config, args.out) if not isinstance(c, Checkpointer)]
    trainer = Trainer(model, config, train_set, val_set, run_dir=args.out, callbacks=callbacks, run_info=run_info)
    if trainer.is_main:
        for stale in earlier:  # --overwrite: the earlier run's files go only once this one can start
            stale.unlink()
        _write_config(args, recipe, config, data_config, model, trainer)
        print(f"tsf train: {_scaling_line(config, trainer)}")
    return trainer


def _scaling_line(requested, trainer) -> str:
    """The run's effective batch and lr (what ``TrainConfig.for_world`` made of ``requested``)."""
    cfg = trainer.config
    line = (f"{trainer.dist.world_size} process(es) x batch {cfg.batch_size} x {cfg.grad_accum_steps} accumulation "
            f"step(s) = global batch {cfg.global_batch}; lr {cfg.lr:g}")
    if requested.lr_reference_batch:
        line += f" (= {requested.lr:g} x {cfg.global_batch} / {requested.lr_reference_batch}, scaled linearly with the global batch)"
    return f"{line}; precision {trainer.precision}"


def _write_config(args: argparse.Namespace, recipe, config, data_config, model, trainer) -> None:
    """``RUN_DIR/config.yaml``: every setting of the run as asked for but ``--out`` (a recipe that
    ``--config`` reruns) and, under ``about.effective``, what this world size made of it."""
    from ..recipes import RESOLVED_FILE, write_resolved

    def plain(value):
        return list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value

    model_config = model.config
    settings = {"data": str(args.data), "model": args.model, "imagenet_init": args.imagenet_init,
                "init": args.init, "overfit_batch": args.overfit_batch, "num_heads": args.num_heads}
    settings.update({k: plain(getattr(model_config, k)) for k in MODEL_OPTIONS if k != "num_heads"})
    settings.update({k: plain(v) for k, v in {**config.to_dict(), **data_config.to_dict()}.items()})
    about = {"command": "train",
             "reproduces": recipe.about["reproduces"] if recipe else "a run of python -m tsf train",
             "paper_top1": recipe.about.get("paper_top1") if recipe else None,
             "official": recipe.about.get("official") if recipe else None,
             "source": str(recipe.path) if recipe else "command line",
             "effective": {"processes": trainer.dist.world_size, "batch_size": trainer.config.batch_size,
                           "grad_accum_steps": trainer.config.grad_accum_steps,
                           "global_batch": trainer.config.global_batch, "lr": trainer.config.lr,
                           "precision": trainer.precision}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_resolved(args.out / RESOLVED_FILE, settings, about)


def _resume_trainer(args: argparse.Namespace):
    from .. import runtime
    from ..data import build_video_datasets
    from ..data.sources import is_shard_source
    from ..model import TimeSformer, TimeSformerConfig
    from ..training import LAST, Trainer
    from ..training.checkpoint import world_size_changed
    from ..weights import load_checkpoint_file

    run_dir = args.resume
    extra = [k for k in _given(args, TrainConfig) if k not in RESUME_OVERRIDABLE] + list(_given(args, VideoDataConfig))
    extra += [k for k in ("data", "out", "model", "imagenet_init", "init", *MODEL_OPTIONS)
              if getattr(args, k) is not None] + (["overfit_batch"] if args.overfit_batch else [])
    if extra:
        raise ValueError(f"--resume continues {run_dir} with its saved settings; remove "
                         f"{', '.join('--' + k.replace('_', '-') for k in extra)} (start a new run to change them)")
    if not (run_dir / LAST).is_file():
        raise FileNotFoundError(f"{run_dir / LAST} does not exist: nothing to resume (was the run started with --out {run_dir}?)")
    for stale in run_dir.glob("*.tmp"):  # the half-written file of a save that a kill interrupted
        stale.unlink(missing_ok=True)
    checkpoint = load_checkpoint_file(run_dir / LAST)
    if checkpoint.get("world_size", 1) != runtime.launched_world_size():
        # before the Trainer resolves the saved global batch for this world size, which may not fit it
        raise ValueError(world_size_changed(checkpoint.get("world_size", 1), runtime.launched_world_size()))
    info = checkpoint.get("run_info", {})
    if "data_config" not in info:
        raise ValueError(f"{run_dir / LAST} was not written by `python -m tsf train` (it does not record its data "
                         f"folder); resume it in Python: Trainer(...).resume({str(run_dir)!r})")
    config = TrainConfig.from_dict({**checkpoint["train_config"], **_given(args, TrainConfig)})
    model = TimeSformer.from_config(TimeSformerConfig.from_dict(checkpoint["config"]))
    data_config = VideoDataConfig(**info["data_config"])
    saved_workers = checkpoint["train_config"].get("num_workers", config.num_workers)
    if config.num_workers != saved_workers and is_shard_source(info["data"]):
        raise ValueError(f"{run_dir} streams shards with {saved_workers} data worker(s) per process, and each worker's "
                         f"share of an epoch depends on their number: resume with --num-workers {saved_workers}")
    train_set, val_set = build_video_datasets(info["data"], model.config, data_config, config.seed,
                                              batch_size=config.batch_size, num_workers=config.num_workers)
    trainer = Trainer(model, config, train_set, val_set, run_dir=run_dir, run_info=info)
    trainer.load_state_dict(checkpoint)
    if trainer.finished:  # not a run stopped at its last step before validating: that one closes its epoch
        raise RunFinished(f"{run_dir} finished at step {trainer.step} of {trainer.total_steps}; nothing was changed "
                          f"(to train longer, start a new run with --init {run_dir / LAST})")
    if trainer.is_main:
        print(f"tsf train: resuming {run_dir} at step {trainer.step}: {_scaling_line(config, trainer)}")
    return trainer


class RunFinished(Exception):
    """``--resume`` of a run that has reached its last step: said, and nothing is done."""
