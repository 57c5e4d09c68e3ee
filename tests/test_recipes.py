"""Recipes and scaling out: every shipped recipe runs (tiny override, CPU), the K400 recipe holds the
official config's values, config files resolve with flag > --set > file > default precedence and
name unknown keys, a 2-node x 1-process gloo run matches one process on the same global batch, the
Slurm script composes its torchrun command, and long videos are evaluated with covering clips.

Runs go through ``tsf.cli.main`` in this process (one thread: the tiny model is as fast on one
core, and nothing waits on importing torch again); the 2-node run needs its own processes.
"""
import json
import os
import socket
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from tsf.cli import build_parser, main
from tsf.cli.common import apply_config
from tsf.cli.train import _given
from tsf.data import VideoDataConfig, ensure_synthetic
from tsf.recipes import list_recipes, load_recipe, recipe_model_config
from tsf.training import TrainConfig
from tsf.weights import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
# what makes any recipe tiny: the tiny model on the 32 px, 8-frame synthetic videos, two steps
TINY = ["model=tiny", "img_size=32", "num_frames=8", "short_side_range=[32,40]", "sampling_rate=1", "target_fps=0",
        "batch_size=2", "global_batch=4", "max_steps=2", "num_workers=0", "progress=false"]
TRAIN_RECIPES = [r.name for r in list_recipes() if r.command == "train"]
EVALUATE_RECIPES = [r.name for r in list_recipes() if r.command == "evaluate"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 synthetic appearance videos (12 train, 4 val) of 8 frames, 32 px."""
    return ensure_synthetic("appearance", root=tmp_path_factory.mktemp("synthetic"), videos_per_class=4)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """An ImageNet-style timm ViT state dict of the tiny preset's size, standing in for ViT-B/16."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vit") / "vit_tiny.pth"
    torch.save(VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_run(data, tiny_vit, tmp_path_factory) -> Path:
    """The K400 recipe, tiny, trained two steps: a checkpoint for the fine-tune and evaluate recipes."""
    run_dir = tmp_path_factory.mktemp("runs") / "k400_tiny"
    assert train("--config", "k400_divided_8x32_224", "--data", data, "--out", run_dir, "--set", *TINY,
                 f"imagenet_init={tiny_vit}") == 0
    return run_dir


def train(*args) -> int:
    return main(["train", *map(str, args)])


def settings_of(*argv: str) -> tuple:
    """The TrainConfig, VideoDataConfig and namespace that ``tsf train ARGV`` resolves to (nothing runs)."""
    args = build_parser().parse_args(["train", *argv])
    apply_config(args, "train")
    return TrainConfig(**_given(args, TrainConfig)), VideoDataConfig(**_given(args, VideoDataConfig)), args


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def same(a, b) -> bool:
    """Equal as a recipe means it: numbers by value, lists element-wise."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


@pytest.mark.parametrize("name", TRAIN_RECIPES)
def test_every_train_recipe_runs_two_steps_on_cpu(name, data, tiny_vit, tiny_run, tmp_path):
    recipe = load_recipe(name)
    # fine-tuning starts from a checkpoint, the others from an ImageNet ViT
    start = [f"init={tiny_run / 'best.pt'}"] if "init" in recipe.settings else [f"imagenet_init={tiny_vit}"]
    tiny = [s for s in TINY if not ("init" in recipe.settings and s.startswith("model="))]
    assert train("--config", name, "--data", data, "--out", tmp_path, "--set", *tiny, *start) == 0
    assert records(tmp_path, "train")[-1]["step"] == 2
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["about"]["source"] == str(recipe.path) and saved["about"]["reproduces"] == recipe.about["reproduces"]
    overridden = {s.partition("=")[0] for s in tiny + start}
    for key, value in recipe.settings.items():  # everything the recipe says and the test left alone reached the run
        if key not in overridden:
            assert same(saved[key], value), (key, saved[key], value)
    model = load_checkpoint_file(tmp_path / "last.pt")["config"]
    assert model["attention_type"] == recipe.settings.get("attention_type", "divided_space_time")
    assert saved["about"]["effective"] == {"processes": 1, "batch_size": 2, "grad_accum_steps": 2, "global_batch": 4,
                                           "lr": pytest.approx(0.005 * 4 / 64), "precision": "fp32"}


@pytest.mark.parametrize("name", EVALUATE_RECIPES)
def test_every_evaluate_recipe_runs_on_cpu(name, data, tiny_run, tmp_path, capsys):
    recipe = load_recipe(name)
    code = main(["evaluate", "--config", name, "--checkpoint", str(tiny_run / "best.pt"), "--json",
                 "--set", f"data={data}", "split=val", "sampling_rate=1", "target_fps=0", "num_workers=0",
                 f"out={tmp_path}"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # the synthetic videos are one clip long: "cover" takes one clip of each
    clips = 1 if recipe.settings["temporal_clips"] == "cover" else recipe.settings["temporal_clips"]
    assert summary["videos"] == 4 and summary["views_per_video"] == clips * recipe.settings["spatial_crops"]


def test_k400_divided_recipe_holds_the_official_config_values():
    config, data, args = settings_of("--config", "k400_divided_8x32_224")
    model = replace(recipe_model_config(load_recipe("k400_divided_8x32_224")), drop_path_rate=args.drop_path_rate,
                    mean=tuple(args.mean), std=tuple(args.std))
    # facebookresearch/TimeSformer configs/Kinetics/TimeSformer_divST_8x32_224.yaml, the defaults it
    # leaves to timesformer/config/defaults.py (*), and the model of timesformer/models/vit.py (**)
    assert (model.attention_type, model.num_frames, model.img_size) == ("divided_space_time", 8, 224)
    assert (model.embed_dim, model.depth, model.num_heads, model.patch_size) == (768, 12, 12, 16)  # ** ViT-B/16
    assert model.drop_path_rate == 0.1  # ** drop_path_rate=0.1
    assert args.imagenet_init == "timm:vit_base_patch16_224.orig_in21k_ft_in1k"  # ** jx_vit_base_p16_224-80ecf9dd.pth
    assert (model.mean, model.std) == ((0.45,) * 3, (0.225,) * 3)  # * DATA.MEAN, DATA.STD
    assert (data.sampling, data.sampling_rate, data.target_fps) == ("dense", 32, 30)  # SAMPLING_RATE 32, * TARGET_FPS 30
    assert data.short_side_range == (256, 320) and not data.inverse_scale_jitter  # TRAIN_JITTER_SCALES, * INV_UNIFORM_SAMPLE
    assert data.hflip  # * DATA.RANDOM_FLIP True
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay) == ("sgd", 0.005, 0.9, 1e-4)
    assert config.decay_norms_and_biases  # optimizer.py: weight decay on all but BatchNorm parameters
    assert (config.schedule, config.lr_milestones, config.lr_step_factor) == ("step", (11.0, 14.0), 0.1)  # STEPS [0, 11, 14], LRS [1, 0.1, 0.01]
    assert (config.epochs, config.warmup_epochs, config.label_smoothing) == (15, 0.0, 0.0)  # MAX_EPOCH 15, * WARMUP_EPOCHS 0
    assert config.val_every == 5 and config.seed == 0  # TRAIN.EVAL_PERIOD 5, RNG_SEED 0
    # the global batch: * GLOBAL_BATCH_SIZE 64, which train_net.py reaches by accumulating gradients
    # over 64 // (NUM_SHARDS 1 x TRAIN.BATCH_SIZE 8) = 8 iterations of a node of NUM_GPUS 8 x 1 clip
    assert (config.global_batch, config.lr_reference_batch, config.batch_size) == (64, 64, 8)
    eight_gpus, four_gpus, one_gpu = (config.for_world(w) for w in (8, 4, 1))
    assert (eight_gpus.grad_accum_steps, eight_gpus.global_batch, eight_gpus.lr) == (1, 64, 0.005)
    assert (four_gpus.grad_accum_steps, four_gpus.global_batch, four_gpus.lr) == (2, 64, 0.005)  # cf. _4gpus.yaml
    assert (one_gpu.grad_accum_steps, one_gpu.global_batch, one_gpu.lr) == (8, 64, 0.005)
    assert args.precision == "auto"  # bf16 autocast on a GPU (resolve_precision), fused attention by default


def test_global_batch_and_linear_lr_scaling_rules():
    config = TrainConfig(batch_size=8, global_batch=64, lr=0.005, lr_reference_batch=64)
    half = replace(config, global_batch=32).for_world(2)  # fewer GPUs, no accumulation: lr follows the batch
    assert (half.grad_accum_steps, half.global_batch, half.lr) == (2, 32, 0.0025)
    assert half.for_world(2) == half  # the resolved config is stable (resumed runs apply it again)
    with pytest.raises(ValueError, match="global_batch=64 is not a whole number .* set batch_size=4"):
        config.for_world(16)  # 2 nodes x 8 GPUs x 8 clips = 128 > 64
    with pytest.raises(ValueError, match="grad_accum_steps=3 contradicts global_batch=64"):
        replace(config, grad_accum_steps=3).for_world(1)
    assert TrainConfig(batch_size=4, grad_accum_steps=2).for_world(3).global_batch == 24  # without global_batch


def test_precedence_flag_over_set_over_file_over_default():
    config, data, args = settings_of("--config", "k400_divided_8x32_224", "--set", "lr=0.01", "batch_size=2",
                                     "imagenet_init=null", "--lr", "0.02")
    assert config.lr == 0.02  # flag
    assert config.batch_size == 2  # --set
    assert config.momentum == 0.9 and data.sampling_rate == 32  # file
    assert config.log_every == 20  # default
    assert args.imagenet_init is None  # --set KEY=null drops the file's value


def test_unknown_keys_and_bad_values_are_named_with_the_fix(tmp_path, capsys):
    def error(*argv) -> str:
        assert train("--data", tmp_path, "--out", tmp_path / "run", *argv) == 2
        return capsys.readouterr().err

    assert "unknown key 'sampling_rat'; did you mean 'sampling_rate'?" in error(
        "--config", "k400_divided_8x32_224", "--set", "sampling_rat=16")
    custom = tmp_path / "mine.yaml"
    custom.write_text("about: {command: train, reproduces: a test}\nmodel: tiny\nwieght_decay: 0.1\n")
    message = error("--config", custom)
    assert f"{custom}: unknown key 'wieght_decay'; did you mean 'weight_decay'?" in message
    assert "--set: lr: 'fast' is not a valid value" in error("--config", "k400_divided_8x32_224", "--set", "lr=fast")
    assert "did you mean k400_divided_8x32_224" in error("--config", "k400_divided")
    assert "is a recipe for `tsf evaluate`" in error("--config", "k400_test_1x3")
    assert "--set 'lr': write KEY=VALUE" in error("--config", "k400_divided_8x32_224", "--set", "lr")
    assert "optimizer: 'adam' is not one of sgd, adamw" in error("--set", "optimizer=adam", "model=tiny")


def test_recipes_command_prints_the_table_and_a_recipe(capsys):
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out
    assert "paper top-1" in table and "GPU memory (estimate)" in table and "counted, not measured" in table
    for recipe in list_recipes():
        assert recipe.name in table
    k400 = next(line for line in table.splitlines() if line.startswith("k400_divided_8x32_224 "))
    assert "78.0" in k400 and "GiB/GPU (train, 8 clips)" in k400
    assert main(["recipes", "k400_hr_16x16_448"]) == 0
    assert "TRAIN_JITTER_SCALES" in capsys.readouterr().out


def test_saved_config_reruns_the_run_and_resume_keeps_working(tiny_run, tmp_path, capsys):
    assert train("--config", tiny_run / "config.yaml", "--out", tmp_path) == 0
    first, again = (load_checkpoint_file(run / "last.pt")["state_dict"] for run in (tiny_run, tmp_path))
    assert all(torch.equal(first[k], again[k]) for k in first)
    capsys.readouterr()
    assert train("--resume", tmp_path) == 0  # the run is complete: said, nothing changed
    assert "finished at step 2 of 2; nothing was changed" in capsys.readouterr().out
    assert train("--resume", tmp_path, "--config", "k400_divided_8x32_224") == 2
    assert "remove --config and --set" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_gloo_match_one_process_on_the_same_global_batch(data, tmp_path):
    # the micro model from scratch, no stochastic depth (it draws per process); global batch 4 = one
    # process x 2 clips x 2 accumulation steps = two nodes x 2 clips
    settings = ["--config", "k400_divided_8x32_224", "--data", str(data), "--set", *TINY, "model=micro", "num_frames=4",
                "imagenet_init=null", "drop_path_rate=0", "max_steps=3", "log_every=1", "checkpoint_every=0"]
    assert train("--out", tmp_path / "single", *settings) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    port = _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
         "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "tsf", "train", "--out", str(tmp_path / "nodes"),
         *settings], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-3000:] for out in outputs)
    assert "2 process(es) x batch 2 x 1 accumulation step(s) = global batch 4" in outputs[0]
    start = records(tmp_path / "nodes", "start")[0]
    assert (start["world_size"], start["global_batch"], start["grad_accum_steps"]) == (2, 4, 1)
    assert records(tmp_path / "single", "start")[0]["grad_accum_steps"] == 2
    single, nodes_loss = ([r["loss"] for r in records(tmp_path / run, "train")] for run in ("single", "nodes"))
    assert len(single) == 3 and nodes_loss == pytest.approx(single, rel=1e-5)
    weights = [load_checkpoint_file(tmp_path / run / "last.pt")["state_dict"] for run in ("single", "nodes")]
    for name, tensor in weights[0].items():  # float32 summation order differs, nothing else
        assert torch.allclose(tensor, weights[1][name], rtol=1e-4, atol=1e-6), name
    validation = [records(tmp_path / run, "epoch")[-1] for run in ("single", "nodes")]  # sharded, then gathered
    assert validation[0]["val_videos"] == validation[1]["val_videos"] and validation[0]["val_top1"] == validation[1]["val_top1"]


def test_slurm_script_starts_torchrun_on_every_node_and_resumes_on_requeue(tmp_path):
    script = ROOT / "scripts" / "slurm_train.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # stand-ins: srun runs its command once, torchrun and scontrol print what they were given
    for name, body in (("srun", 'echo "srun $*" >> "$LOG"; while [[ $1 == -* ]]; do shift; done; exec "$@"'),
                       ("torchrun", 'echo "torchrun $*" >> "$LOG"'),
                       ("scontrol", 'printf "node-a\\nnode-b\\n"')):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/bash\n{body}\n")
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log"),
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8",
           "SLURM_JOB_ID": "4242", "DATA": "/datasets/k400", "RUN_DIR": str(run_dir), "RECIPE": "k400_divided_8x32_224"}

    def launch(*extra) -> str:
        (tmp_path / "log").write_text("")
        subprocess.run(["bash", str(script), *extra], env=env, check=True, capture_output=True, text=True)
        return (tmp_path / "log").read_text()

    fresh = launch("--set", "batch_size=4")
    assert "--nnodes 2 --nproc-per-node 8" in fresh and "--rdzv-endpoint node-a:" in fresh
    assert f"-m tsf train --config k400_divided_8x32_224 --data /datasets/k400 --out {run_dir}" in fresh
    assert "--set batch_size=4" in fresh
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"")  # a requeued job finds its checkpoint
    requeued = launch("--set", "batch_size=4")
    assert f"-m tsf train --resume {run_dir}" in requeued and "--config" not in requeued


def test_long_videos_are_evaluated_with_clips_covering_each_video(tiny_run, tmp_path, capsys):
    long_videos = ensure_synthetic("appearance", root=tmp_path, videos_per_class=2, frames=20, val_fraction=0.5)
    common = ["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--data", str(long_videos), "--sampling-rate", "1",
              "--target-fps", "0", "--spatial-crops", "1", "--num-workers", "0", "--out", str(tmp_path), "--json", "--overwrite"]
    assert main([*common, "--temporal-clips", "cover"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["views_per_video"] == 3 and summary["mean_views_per_video"] == 3  # ceil(20 frames / 8)
    assert main([*common, "--temporal-clips", "13"]) == 0  # up to one clip per start frame: 20 - 8 + 1
    assert json.loads(capsys.readouterr().out)["views_per_video"] == 13
    assert main([*common, "--temporal-clips", "cover", "--sampling", "uniform"]) == 2
    assert "uniform sampling already spans the whole video" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*common, "--temporal-clips", "all"])
    assert "neither a positive number of clips nor 'cover'" in capsys.readouterr().err
