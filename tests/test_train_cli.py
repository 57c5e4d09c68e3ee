"""`python -m tsf train` on the synthetic videos: the appearance task learnt on CPU, kill -9 and
resume to identical weights, the one-batch sanity check, and the errors of bad input (gloo DDP:
test_recipes.py, over two nodes).

The tiny recipe used here (and documented in TrainConfig): AdamW lr 2e-3, weight decay 0.05,
10% warmup then cosine, grad clip 1.0, batch 32. The default synthetic task has 256 training and
64 validation videos (8 frames of 32 x 32 px): 8 steps per epoch.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tsf
from tsf.weights import load_checkpoint_file

from conftest import OFFICIAL_PYTH

ROOT = Path(__file__).resolve().parents[1]
TINY_RECIPE = ["--optimizer", "adamw", "--lr", "2e-3", "--weight-decay", "0.05", "--schedule", "cosine",
               "--grad-clip", "1.0", "--no-progress"]


# One intra-op thread per process: the tiny model runs ~as fast as on two, a data-loading worker
# takes the second core, two DDP processes do not oversubscribe the two cores, and nothing slows
# down 30x when another process competes for a core (as OpenMP threads do).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def tsf_cli(*args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tsf", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **ONE_THREAD})
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def appearance_data(tmp_path_factory) -> Path:
    """The synthetic appearance task, generated once per test session (shared with
    test_evaluate.py and test_predict.py through the session's base temp folder)."""
    from tsf.data.synth import generate

    root = tmp_path_factory.getbasetemp() / "appearance-data"
    if not (root / "classes.txt").is_file():
        generate("appearance", root)
    return root


def appearance_run(tmp_path_factory) -> Path:
    """The tiny model trained on the appearance task, once per session: its run folder."""
    run_dir = tmp_path_factory.getbasetemp() / "appearance-run"
    if not (run_dir / "summary.json").is_file():
        data = appearance_data(tmp_path_factory)
        tsf_cli("train", "--data", data, "--out", run_dir, "--model", "tiny", *TINY_RECIPE,
                "--batch-size", 32, "--epochs", 10, "--warmup-epochs", 1, "--num-workers", 1, "--log-every", 4)
    return run_dir


@pytest.fixture
def appearance(tmp_path_factory) -> Path:
    return appearance_data(tmp_path_factory)


def test_tiny_model_learns_the_appearance_task_on_cpu(tmp_path_factory):
    run_dir = appearance_run(tmp_path_factory)
    for name in ("metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_val_top1"] >= 0.9, summary
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    epochs = records(run_dir, "epoch")
    assert epochs[-1]["step"] == summary["steps"] and all("val_top1" in r for r in epochs)
    model = tsf.from_pretrained(run_dir / "best.pt")
    assert model.config.class_names == tuple((Path(summary["run_info"]["data"]) / "classes.txt").read_text().split())
    print(f"\nappearance: val top-1 {summary['best_val_top1']:.3f} after {summary['steps']} steps, {summary['train_time_s']:.0f} s")


def test_kill_9_mid_epoch_then_resume_ends_with_identical_weights(appearance, tmp_path):
    args = ["--data", appearance, "--model", "micro", "--drop-path-rate", "0.2", *TINY_RECIPE, "--batch-size", 4,
            "--epochs", 2, "--checkpoint-every", 3, "--log-every", 3, "--num-workers", 0]
    tsf_cli("train", "--out", tmp_path / "straight", *args)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "tsf", "train", "--out", str(killed), *map(str, args)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ONE_THREAD})
    while not (killed / "last.pt").exists() and process.poll() is None:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    at_kill = load_checkpoint_file(killed / "last.pt")
    steps_per_epoch = records(tmp_path / "straight", "start")[0]["steps_per_epoch"]
    assert at_kill["epoch"] == 0 and 0 < at_kill["step_in_epoch"] < steps_per_epoch, "killed mid-epoch"

    tsf_cli("train", "--resume", killed)
    straight, resumed = (load_checkpoint_file(run / "last.pt") for run in (tmp_path / "straight", killed))
    assert resumed["step"] == straight["step"] == 2 * steps_per_epoch
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    for a, b in zip(straight["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the log reads as one run: no duplicated steps from the killed process
    steps = [r["step"] for r in records(killed, "train")]
    assert steps == sorted(set(steps)) == [r["step"] for r in records(tmp_path / "straight", "train")]


def test_overfit_batch_reaches_100_percent(appearance, tmp_path):
    result = tsf_cli("train", "--data", appearance, "--out", tmp_path / "overfit", "--model", "tiny", *TINY_RECIPE,
                     "--batch-size", 8, "--overfit-batch", 40, "--num-workers", 0)
    assert "overfit-batch: top-1 1.000 on the batch of 8 clips after 40 steps" in result.stdout
    assert (tmp_path / "overfit" / "metrics.jsonl").is_file() and not (tmp_path / "overfit" / "last.pt").exists()


def test_bad_input_is_reported_with_the_fix(appearance, tmp_path):
    missing = tsf_cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "r", "--model", "tiny", check=False)
    assert missing.returncode == 2 and "nowhere/classes.txt does not exist" in missing.stderr
    assert "tsf data synth" in missing.stderr
    neither = tsf_cli("train", "--data", appearance, "--out", tmp_path / "r", check=False)
    assert neither.returncode == 2 and "--model" in neither.stderr and "--init" in neither.stderr
    no_run = tsf_cli("train", "--resume", tmp_path / "r", check=False)
    assert no_run.returncode == 2 and "nothing to resume" in no_run.stderr
    bad_value = tsf_cli("train", "--data", appearance, "--out", tmp_path / "r", "--model", "tiny", "--lr", "-1", check=False)
    assert bad_value.returncode == 2 and "lr=-1.0 must be > 0" in bad_value.stderr


def test_resume_refuses_changed_settings_and_out_refuses_an_existing_run(tmp_path_factory):
    run_dir = appearance_run(tmp_path_factory)
    again = tsf_cli("train", "--data", run_dir, "--out", run_dir, "--model", "tiny", check=False)
    assert again.returncode == 2 and f"--resume {run_dir}" in again.stderr
    changed = tsf_cli("train", "--resume", run_dir, "--lr", "0.1", check=False)
    assert changed.returncode == 2 and "remove --lr" in changed.stderr


def test_help_documents_every_config_field():
    from dataclasses import fields

    from tsf.data import VideoDataConfig
    from tsf.training import TrainConfig

    out = tsf_cli("train", "--help").stdout
    for f in fields(TrainConfig) + fields(VideoDataConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name
    assert "(default: 0.005)" in out and "--resume RUN_DIR" in out


def test_finetune_the_official_fixture_on_new_classes(appearance, tmp_path):
    """--init with another class count: a new 4-class head on the official 5-class fixture, with
    layer-wise lr decay; the run's checkpoint loads like any other."""
    tsf_cli("train", "--data", appearance, "--out", tmp_path / "ft", "--init", OFFICIAL_PYTH, "--num-heads", 4,
            *TINY_RECIPE, "--layer-decay", 0.75, "--batch-size", 16, "--max-steps", 4, "--num-workers", 0)
    model = tsf.from_pretrained(tmp_path / "ft" / "best.pt")
    assert model.config.num_classes == 4 and model.config.class_names == ("red", "green", "blue", "yellow")
    assert (model.config.num_frames, model.config.embed_dim, model.config.num_heads) == (4, 64, 4)
    pretrained = tsf.from_pretrained(OFFICIAL_PYTH, num_heads=4).state_dict()
    changed = [k for k, v in model.state_dict().items() if k in pretrained and not torch.equal(v, pretrained[k])]
    assert changed, "the backbone was trained"
