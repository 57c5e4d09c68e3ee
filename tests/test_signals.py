"""Stopping on SIGTERM/SIGINT/SIGUSR1 (tsf.training.signals): after a whole step, the same one on
every process, with last.pt written and the run resuming bit-identically; signals during the save
ignored; the epoch an interruption leaves open closed on resume; TensorBoard event files that a
resumed run continues without repeating steps. In process, under `python -m tsf train` (the whole
process group signalled, data-loading workers included) and under torchrun (one rank signalled).
The real Slurm cluster: test_slurm.py."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tsf.model import create_model
from tsf.training import Callback, TrainConfig, Trainer, TrainingInterrupted
from tsf.training.signals import INTERRUPTED_EXIT_CODE, signals_received, stop_on_signals
from tsf.weights import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", grad_clip=1.0, num_workers=0,
            progress=False)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}

pytestmark = pytest.mark.usefixtures("one_thread")


class Clips(torch.utils.data.Dataset):
    """Random uint8 clips labelled by the colour channel that is brightened."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.clips = torch.randint(0, 100, (n, 3, 4, 32, 32), generator=g, dtype=torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        clip = self.clips[i].clone()
        clip[int(self.labels[i])] += 120
        return {"clip": clip, "label": int(self.labels[i]), "index": i}


def trainer(run_dir, **config) -> Trainer:
    torch.manual_seed(0)
    model = create_model("micro", num_classes=3, drop_path_rate=0.2)  # stochastic depth: the RNG state matters
    settings = dict(epochs=2, batch_size=8, log_every=1, checkpoint_every=4, **FAST)
    return Trainer(model, TrainConfig(**{**settings, **config}), Clips(48), Clips(6, seed=1), run_dir=run_dir)


class SignalAt(Callback):
    """Sends this process ``sig`` at the end of step ``step``."""

    def __init__(self, step, sig=signal.SIGTERM):
        self.step, self.sig = step, sig

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            os.kill(os.getpid(), self.sig)


def records(run_dir: Path, kind=None) -> list[dict]:
    lines = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if kind is None or r["kind"] == kind]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# 6 steps per epoch, 12 in all: mid-epoch, the epoch's last step (validation pending), the run's last
@pytest.mark.parametrize("at_step, sig", [(3, signal.SIGTERM), (5, signal.SIGUSR1), (11, signal.SIGINT)],
                         ids=["mid-epoch-SIGTERM", "epoch-end-SIGUSR1", "run-end-SIGINT"])
def test_a_signal_stops_after_the_next_step_writes_last_pt_and_resumes_bit_identically(tmp_path, at_step, sig):
    straight = trainer(tmp_path / "straight")
    straight.fit()
    run = trainer(tmp_path / "run")
    run.add_callback(SignalAt(at_step, sig))
    with pytest.raises(TrainingInterrupted) as caught:
        run.fit()
    stopped = at_step + 1  # the signal came after step at_step's all-reduce: step at_step + 1 was in flight
    error = caught.value
    assert (error.step, error.signal_name, error.checkpoint) == (stopped, sig.name, str(tmp_path / "run" / "last.pt"))
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler), "handlers restored after fit"
    saved = load_checkpoint_file(tmp_path / "run" / "last.pt")
    assert (saved["step"], saved["step_in_epoch"]) == (stopped, (stopped - 1) % 6 + 1)
    last = records(tmp_path / "run")[-1]
    assert (last["kind"], last["step"], last["signal"]) == ("interrupted", stopped, sig.name)
    # an interruption at an epoch's last step stops before validating: the resumed run validates
    assert [r["epoch"] for r in records(tmp_path / "run", "epoch")] == list(range((stopped - 1) // 6))

    resumed = trainer(tmp_path / "run")
    resumed.resume(tmp_path / "run")
    assert not resumed.finished  # also when stopped at the last step: its epoch is still to close
    summary = resumed.fit()
    assert summary["steps"] == 12 and summary["best_epoch"] == straight.best_epoch
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_weights(load_checkpoint_file(tmp_path / "straight" / "best.pt")["state_dict"],
                        load_checkpoint_file(tmp_path / "run" / "best.pt")["state_dict"])
    train = lambda run_dir: [(r["step"], r["loss"]) for r in records(run_dir, "train")]
    assert train(tmp_path / "run") == train(tmp_path / "straight")
    val = lambda run_dir: [(r["epoch"], r["val_loss"]) for r in records(run_dir, "epoch")]
    assert val(tmp_path / "run") == val(tmp_path / "straight")


class SlowSave(Callback):
    """During the interruption's save, three more signals arrive."""

    def on_interrupt(self, trainer):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            os.kill(os.getpid(), sig)
            time.sleep(0.01)


def test_signals_during_the_save_are_ignored_and_corrupt_nothing(tmp_path):
    run = trainer(tmp_path)
    run.callbacks.insert(0, SlowSave())  # before the Checkpointer: the signals land while it writes
    run.add_callback(SignalAt(2))
    with stop_on_signals():  # an outer block (as the command line has) keeps the count for this test
        with pytest.raises(TrainingInterrupted) as caught:
            run.fit()
        assert signals_received() == 4 and caught.value.signal_name == "SIGTERM"
    saved = load_checkpoint_file(tmp_path / "last.pt")
    assert saved["step"] == 3
    assert_same_weights(saved["state_dict"], run.model.state_dict())
    assert not list(tmp_path.glob("*.tmp"))
    assert [r["kind"] for r in records(tmp_path)].count("interrupted") == 1


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise KeyboardInterrupt  # stands in for kill -9: nothing after the last checkpoint is kept


def scalars(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_event_files_of_a_resumed_run_show_each_step_once(tmp_path):
    straight = trainer(tmp_path / "straight", tensorboard=True)
    straight.fit()
    crashed = trainer(tmp_path / "run", tensorboard=True)
    crashed.add_callback(CrashAt(7))  # last.pt is step 4; steps 5-7 and epoch 0 were logged already
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed = trainer(tmp_path / "run", tensorboard=True)
    resumed.resume(tmp_path / "run")
    resumed.fit()
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 2
    expected, got = scalars(tmp_path / "straight"), scalars(tmp_path / "run")
    assert {"train/loss", "train/lr", "train/top1", "train/clips_per_s", "train/data_wait", "train/bad_videos",
            "train/grad_norm", "val/loss", "val/top1", "val/top5", "val/mean_class_accuracy"} <= set(expected)
    assert [step for step, _ in got["train/loss"]] == list(range(1, 13))
    assert [step for step, _ in got["val/top1"]] == [6, 12]
    for tag in ("train/loss", "train/lr", "val/loss", "val/top1"):
        assert got[tag] == expected[tag], tag


# -- the command line, the whole process group signalled ------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from tsf.data.synth import generate

    return generate("appearance", tmp_path_factory.mktemp("signals") / "data", videos_per_class=12)


def cli_args(data: Path, out: Path) -> list[str]:
    # 40 training videos, batch 2: 20 steps per epoch
    return ["-m", "tsf", "train", "--data", str(data), "--out", str(out), "--model", "micro", "--drop-path-rate", "0.2",
            "--optimizer", "adamw", "--lr", "2e-3", "--batch-size", "2", "--epochs", "2", "--log-every", "1",
            "--checkpoint-every", "100", "--no-progress", "--tensorboard"]


def wait_for_step(run_dir: Path, process: subprocess.Popen, step: int, timeout: float = 120) -> int:
    """Poll metrics.jsonl until a train line reaches ``step``; the last step logged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            logged = [r["step"] for r in records(run_dir, "train")]
        except (FileNotFoundError, json.JSONDecodeError):
            logged = []
        if logged and logged[-1] >= step:
            return logged[-1]
        time.sleep(0.005)
    raise AssertionError(f"the run did not reach step {step}: {process.poll()=}")


def test_sigterm_to_the_process_group_with_loader_workers_then_resume(data, tmp_path):
    subprocess.run([sys.executable, *cli_args(data, tmp_path / "straight"), "--num-workers", "1"], cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    run_dir = tmp_path / "run"
    # its own session: killpg reaches the data-loading worker too, as Ctrl-C or a Slurm job step would
    process = subprocess.Popen([sys.executable, *cli_args(data, run_dir), "--num-workers", "1"], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    signalled = wait_for_step(run_dir, process, 5)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == INTERRUPTED_EXIT_CODE, err[-3000:]
    assert f"continue with: python -m tsf train --resume {run_dir}" in err
    stop = records(run_dir)[-1]
    assert stop["kind"] == "interrupted" and stop["signal"] == "SIGTERM"
    saved = load_checkpoint_file(run_dir / "last.pt")
    assert saved["step"] == stop["step"] and stop["step"] - signalled <= 3 and saved["step_in_epoch"] < 20
    print(f"\nSIGTERM after step {signalled} (last logged): stopped and saved at step {saved['step']}, 0 steps lost")

    resumed = subprocess.run([sys.executable, "-m", "tsf", "train", "--resume", str(run_dir)], cwd=ROOT, env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(load_checkpoint_file(tmp_path / "straight" / "last.pt")["state_dict"],
                        load_checkpoint_file(run_dir / "last.pt")["state_dict"])
    kinds = [r["kind"] for r in records(run_dir)]
    assert kinds.count("interrupted") == 1 and kinds.index("interrupted") + 1 == kinds.index("resume")
    assert [s for s, _ in scalars(run_dir)["train/loss"]] == list(range(1, 41))


# -- torchrun: one rank signalled, both stop at the same step --------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).split(b"=")[1])


def test_under_torchrun_a_signal_to_one_rank_stops_both_at_the_same_step(data, tmp_path):
    args = [a for a in cli_args(data, tmp_path / "straight")[2:] if a != "--tensorboard"]  # drop "-m tsf"
    args[args.index("--batch-size") + 1] = "1"  # global batch 2 on two processes: 20 steps per epoch
    straight = subprocess.run(torchrun("-m", "tsf", *args, "--num-workers", "0"), cwd=ROOT, env=ENV,
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    run_dir = tmp_path / "run"
    args[args.index("--out") + 1] = str(run_dir)
    process = subprocess.Popen(torchrun("-m", "tsf", *args, "--num-workers", "0"), cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled = wait_for_step(run_dir, process, 4)
    rank1 = next(pid for pid in children(process.pid) if rank_of(pid) == 1)
    os.kill(rank1, signal.SIGUSR1)  # rank 0 receives nothing: it learns it with the next step's all-reduce
    _, err = process.communicate(timeout=180)
    assert process.returncode != 0  # torchrun reports its workers' exit code 75 as a failure
    stop = records(run_dir)[-1]
    assert (stop["kind"], stop["signal"]) == ("interrupted", "another process's signal"), err[-3000:]
    saved = load_checkpoint_file(run_dir / "last.pt")
    assert saved["step"] == stop["step"] and 0 < stop["step"] - signalled <= 3 and saved["world_size"] == 2
    assert len(saved["rng"]) == 2  # both ranks took part in the save
    resumed = subprocess.run(torchrun("-m", "tsf", "train", "--resume", str(run_dir)), cwd=ROOT, env=ENV,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(load_checkpoint_file(tmp_path / "straight" / "last.pt")["state_dict"],
                        load_checkpoint_file(run_dir / "last.pt")["state_dict"])
    assert [r["step"] for r in records(run_dir, "train")] == list(range(1, 41))
