"""Bad input through the real command line, table-driven: for every case the exit code, a fragment
of the one-line message, no traceback, and every file that existed before is byte-identical after
(nothing overwritten, nothing half-written). Also: a rerun from RUN_DIR/config.yaml trains the same
weights, and resuming a finished run changes nothing."""
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import OFFICIAL_PYTH, encode_test_video
from tsf.data.readers import VideoInfo
from tsf.data.synth import generate
from tsf.weights import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TSF_DEBUG": ""}
TINY_RUN = ["--model", "tiny", "--optimizer", "adamw", "--lr", "2e-3", "--batch-size", "4", "--max-steps", "2",
            "--num-workers", "0", "--no-progress"]


def tsf_cli(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsf", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=600)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Everything the cases point at, in one folder whose files must survive every case."""
    root = tmp_path_factory.mktemp("world")
    data = generate("appearance", root / "data", videos_per_class=4)
    assert tsf_cli("train", "--data", data, "--out", root / "run", *TINY_RUN).returncode == 0
    # videos: good, not a video at all, and cut short with its index at the front (faststart)
    encode_test_video(root / "good.mp4", frames=40, container_options={"movflags": "faststart"})
    full = encode_test_video(root / "full.mp4", frames=125, container_options={"movflags": "faststart"}).read_bytes()
    (root / "truncated.mp4").write_bytes(full[: int(len(full) * 0.8)])
    (root / "text.mp4").write_text("this is not a video\n")
    # checkpoints: empty, random bytes, Python objects
    (root / "empty.pt").write_bytes(b"")
    (root / "random.pt").write_bytes(random.Random(0).randbytes(4096))  # seeded: test_random_bytes_... sweeps many
    torch.save({"state_dict": {}, "info": VideoInfo(1, 1.0, 1, 1)}, root / "objects.pt")
    # a data folder with one broken validation video
    broken = generate("appearance", root / "broken", videos_per_class=4)
    val_videos = [line.split(",")[0] for line in (broken / "val.csv").read_text().splitlines()[1:]]
    (broken / val_videos[0]).write_bytes(b"")
    # results that must never be replaced
    (root / "only_best").mkdir()
    (root / "only_best" / "best.pt").write_bytes((root / "run" / "best.pt").read_bytes())
    (root / "failed").mkdir()
    (root / "failed" / "metrics.jsonl").write_text('{"kind": "error", "error": "out of memory"}\n')
    (root / "evaluated").mkdir()
    (root / "evaluated" / "eval_val_summary.json").write_text('{"top1": 0.9}\n')
    (root / "features.npy").write_bytes(b"earlier features")
    (root / "report.json").write_text("{}\n")
    (root / "manifests").mkdir()
    (root / "manifests" / "train.csv").write_text("path,label\nmine.mp4,cat\n")
    (root / "tree" / "cat").mkdir(parents=True)
    (root / "tree" / "dog").mkdir()
    for name in ("cat/a.mp4", "cat/b.mp4", "dog/c.mp4", "dog/d.mp4"):
        (root / "tree" / name).write_bytes((root / "good.mp4").read_bytes())
    (root / "notebook_run").mkdir()
    (root / "notebook_run" / "00_quickstart.ipynb").write_text("{}\n")
    (root / "file_class.csv").write_text("file,class\ngood.mp4,cat\n")
    (root / "no_rows.csv").write_text("path,label\n")
    return root


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


W = "{world}"  # stands for the world folder in the cases
CASES = [
    # (id, argv, exit code, fragment of the message)
    ("synth over a data folder", ["data", "synth", "--task", "motion", "--out", f"{W}/data"], 2, "is not empty"),
    ("manifest over manifests", ["data", "manifest", f"{W}/tree", "--out", f"{W}/manifests"], 2, "--overwrite"),
    ("check over a report", ["data", "check", f"{W}/data/val.csv", "--report", f"{W}/report.json"], 2, "already exist"),
    ("check with the manifest as the clean list", ["data", "check", f"{W}/data/val.csv", "--write-clean",
                                                   f"{W}/data/val.csv", "--overwrite"], 2, "is the manifest being checked"),
    ("check of an empty manifest", ["data", "check", f"{W}/no_rows.csv", "--no-progress"], 1, "lists no videos"),
    ("check of a file,class header", ["data", "check", f"{W}/file_class.csv"], 2, "rename the columns"),
    ("train over a best.pt", ["train", "--data", f"{W}/data", "--out", f"{W}/only_best", *TINY_RUN], 2, "best.pt"),
    ("train over a failed run", ["train", "--data", f"{W}/data", "--out", f"{W}/failed", *TINY_RUN], 2, "metrics.jsonl"),
    ("train over a run", ["train", "--data", f"{W}/data", "--out", f"{W}/run", *TINY_RUN], 2, f"--resume {W}/run"),
    ("unknown preset", ["train", "--data", f"{W}/data", "--out", f"{W}/new", "--model", "tinny"], 2, "unknown preset 'tinny'"),
    ("device gpu", ["train", "--data", f"{W}/data", "--out", f"{W}/new", *TINY_RUN, "--device", "gpu"], 2, "device='gpu'"),
    ("cuda without a GPU", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/run/best.pt", "--device", "cuda"], 2,
     "sees no CUDA device"),
    ("flag typo", ["train", "--data", f"{W}/data", "--lrr", "3"], 2, "python -m tsf train: error: unrecognized arguments: --lrr"),
    ("bad precision", ["evaluate", "--checkpoint", f"{W}/run/best.pt", "--data", f"{W}/data", "--precision", "fp8",
                       "--out", f"{W}/new"], 2, "precision='fp8'"),
    ("resume a finished run", ["train", "--resume", f"{W}/run"], 0, "finished at step 2 of 2; nothing was changed"),
    ("class count mismatch", ["evaluate", "--checkpoint", OFFICIAL_PYTH, "--num-heads", "4", "--data", f"{W}/data",
                              "--out", f"{W}/new"], 2, "lists 4 classes but the model predicts 5"),
    ("a broken video in evaluation", ["evaluate", "--checkpoint", f"{W}/run/best.pt", "--data", f"{W}/broken",
                                      "--max-bad-fraction", "0.5", "--out", f"{W}/broken_eval"], 1, "left out"),
    ("too many broken videos", ["evaluate", "--checkpoint", f"{W}/run/best.pt", "--data", f"{W}/broken",
                                "--max-bad-fraction", "0", "--out", f"{W}/new"], 2, "max_bad_fraction=0.0"),
    ("zero temporal clips", ["evaluate", "--checkpoint", f"{W}/run/best.pt", "--data", f"{W}/data",
                             "--temporal-clips", "0"], 2, "neither a positive number of clips"),
    ("evaluate over results", ["evaluate", "--checkpoint", f"{W}/run/best.pt", "--data", f"{W}/data",
                               "--out", f"{W}/evaluated"], 2, "eval_val_summary.json"),
    ("empty checkpoint", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/empty.pt"], 2, "is empty (0 bytes)"),
    ("random bytes", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/random.pt"], 2, "is not a PyTorch checkpoint"),
    ("python objects", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/objects.pt"], 2, "--trust-checkpoint"),
    ("no such checkpoint", ["predict", f"{W}/good.mp4", "--checkpoint", "timesformer_k400_8x22"], 2,
     "did you mean the zoo model 'timesformer_k400_8x224'"),
    ("heads assumed", ["predict", f"{W}/good.mp4", "--checkpoint", OFFICIAL_PYTH], 0, "warning: the checkpoint does "
     "not record its attention heads: assuming num_heads=1"),
    ("one bad video among good ones", ["predict", f"{W}/good.mp4", f"{W}/text.mp4", f"{W}/good.mp4", "--checkpoint",
                                       f"{W}/run/best.pt", "--features", f"{W}/batch.npy"], 1, "skipped"),
    ("a truncated video", ["predict", f"{W}/truncated.mp4", "--checkpoint", f"{W}/run/best.pt"], 2, "truncated"),
    ("strict", ["predict", f"{W}/good.mp4", f"{W}/missing.mp4", "--checkpoint", f"{W}/run/best.pt", "--strict",
                "--features", f"{W}/strict.npy"], 2, "--strict: nothing was written"),
    ("stride without window", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/run/best.pt", "--stride", "1"], 2,
     "give --window"),
    ("topk 0", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/run/best.pt", "--topk", "0"], 2, "whole number >= 1"),
    ("features over features", ["predict", f"{W}/good.mp4", "--checkpoint", f"{W}/run/best.pt", "--features",
                                f"{W}/features.npy"], 2, "already exist"),
    ("notebook run over a run", ["run", "notebooks/00_quickstart.ipynb", "--out", f"{W}/notebook_run"], 1,
     "already exist"),
    ("unknown recipe", ["recipes", "k400_divided"], 2, "did you mean"),
    ("unknown --set key", ["train", "--config", "k400_divided_8x32_224", "--set", "batch_sise=4", "--data", f"{W}/data",
                           "--out", f"{W}/new"], 2, "did you mean 'batch_size'"),
]


@pytest.mark.parametrize("argv, code, fragment", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_one_clear_message_and_loses_nothing(world, argv, code, fragment):
    before = snapshot(world)
    result = tsf_cli(*[str(a).replace(W, str(world)) for a in argv])
    output = result.stdout + result.stderr
    assert result.returncode == code, output[-3000:]
    assert fragment.replace(W, str(world)) in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    after = snapshot(world)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"changed or removed: {changed}"


def test_batch_work_keeps_the_good_items(world):
    """The batch case above wrote the two good videos' features (and no temporary file)."""
    features = world / "batch.npy"
    if not features.exists():
        tsf_cli("predict", world / "good.mp4", world / "text.mp4", world / "good.mp4", "--checkpoint",
                world / "run" / "best.pt", "--features", features)
    import numpy as np

    assert np.load(features).shape[0] == 2
    assert not list(world.glob(".batch.*")), "no temporary file is left"
    assert not (world / "strict.npy").exists()


def test_saved_config_reruns_the_run_exactly(world, tmp_path):
    result = tsf_cli("train", "--config", world / "run" / "config.yaml", "--out", tmp_path / "again")
    assert result.returncode == 0, result.stderr[-3000:]
    first, again = (load_checkpoint_file(run / "last.pt")["state_dict"] for run in (world / "run", tmp_path / "again"))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


def test_debug_shows_the_traceback(world):
    result = tsf_cli("--debug", "predict", world / "good.mp4", "--checkpoint", world / "empty.pt")
    assert result.returncode != 0 and "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_random_bytes_are_never_loaded_and_always_named(tmp_path):
    """Arbitrary bytes fail inside the unpickler in many ways (IndexError, UnicodeDecodeError, KeyError ...,
    about one file in ten not as an UnpicklingError): every one is a CheckpointError naming the file."""
    from tsf.errors import CheckpointError
    from tsf.weights import load_checkpoint_file

    generator = random.Random(1)
    path = tmp_path / "random.pt"
    for _ in range(200):
        path.write_bytes(generator.randbytes(generator.randint(1, 4096)))
        with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
            load_checkpoint_file(path)
