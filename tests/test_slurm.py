"""scripts/slurm_train.sh on a real Slurm cluster of one node (this machine), with the tiny model on
synthetic videos, CPU, one process per job:

- an uninterrupted job, then a resubmission under its job name (which finds its run folder and
  has nothing left to do);
- a job requeued mid-epoch (``scontrol requeue``: SIGTERM to every process, as preemption), which
  must resume at the step it was signalled, not at its last periodic checkpoint;
- a job with a two-minute time limit and the warning 50 s before it (``--signal=B:USR1@50``), which
  must checkpoint, requeue itself and finish over several allocations;

and both interrupted runs must end with the uninterrupted job's weights, bit for bit.

The test starts its own ``munged``, ``slurmctld`` and ``slurmd`` from a ``slurm.conf`` in a
temporary folder (``SLURM_CONF``), stops exactly those processes afterwards, and touches no system
configuration. A requeued job waits the credential lifetime before it starts again (BeginTime;
``cred_expire``, 120 s by default): this cluster sets it to 10 s. It needs the
Debian packages ``slurm-wlm`` and ``munge`` and root (slurmd runs as root), as in CI (``.ci/run``
installs them); without them it is skipped with the reason. About 4 minutes on 2 cores.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tsf.weights import load_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_train.sh"
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo")
MISSING = [tool for tool in DAEMONS + CLIENTS if shutil.which(tool, path=SEARCH_PATH) is None]

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"Slurm/munge not installed (no {', '.join(MISSING)}): to run this test "
                       f"install them (Debian/Ubuntu: apt-get install slurm-wlm munge; .ci/run does) and run as root"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (slurmd runs as root): run the suite as root, as CI does, "
                       "with slurm-wlm and munge installed"),
]

STEPS_PER_EPOCH = 32  # 128 training videos, batch 4
CHECKPOINT_EVERY = 50
WARNING_S = 50  # the time-limited job: --time=2 (minutes), SIGUSR1 50 s before
TIMEOUT_S = 540
CRED_EXPIRE_S = 10  # how long a requeued job waits (Slurm's default: 120 s)
CPUS = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tool(name: str) -> str:
    return shutil.which(name, path=SEARCH_PATH)


class Cluster:
    """munged + slurmctld + slurmd in the foreground, children of this process, configured in ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.daemons: list[subprocess.Popen] = []
        for name in ("state", "spool", "log"):
            (root / name).mkdir(parents=True)
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.socket = root / "munge.socket"
        self.conf = root / "slurm.conf"
        host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
        self.conf.write_text("\n".join([
            "ClusterName=tsftest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={self.socket},cred_expire={CRED_EXPIRE_S}", "CredType=cred/munge",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU", "SchedulerType=sched/builtin", "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "MpiDefault=none", "SwitchType=switch/none", "ReturnToService=2", "KillWait=30", "MinJobAge=3600",
            f"NodeName={host} CPUs={CPUS} State=UNKNOWN",
            # three jobs at once, whatever the core count: they share the CPUs
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4", ""]))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "OMP_NUM_THREADS": "1",
                    "PATH": f"{Path(sys.executable).parent}:{SEARCH_PATH}"}  # the jobs' python and torchrun: this one's
        for name in ("RUN_DIR", "RECIPE", "DATA", "NPROC_PER_NODE"):
            self.env.pop(name, None)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        log = self.root / "log"
        self.daemons.append(subprocess.Popen(
            [_tool("munged"), "--foreground", "--force", f"--key-file={self.root / 'munge.key'}",
             f"--socket={self.socket}", f"--pid-file={self.root / 'munged.pid'}", f"--log-file={log / 'munged.log'}",
             f"--seed-file={self.root / 'munged.seed'}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        self._wait(lambda: self.socket.exists(), "munged's socket", log / "munged.log")
        for daemon in ("slurmctld", "slurmd"):
            command = [_tool(daemon), "-D"] + (["-i"] if daemon == "slurmctld" else [])
            with open(log / f"{daemon}.out", "w") as out:
                self.daemons.append(subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT))
            time.sleep(1)
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() == "idle",
                   "the node to be idle", log / "slurmd.log")

    def _wait(self, ready, what: str, log: Path, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                text = log.read_text()[-3000:] if log.exists() else ""
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'}\n{text}")
            time.sleep(0.5)

    def run(self, *command, check=True) -> subprocess.CompletedProcess:
        return subprocess.run([_tool(command[0]), *command[1:]], env=self.env, capture_output=True, text=True,
                              check=check, timeout=60)

    def job(self, job_id: str) -> dict:
        """``scontrol show job``'s fields (JobState, Reason, Restarts, ExitCode...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id, check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def stop(self) -> None:
        if self.daemons[1:]:  # slurmctld is up: cancel what is left, let slurmd end the job steps
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if jobs:
                self.run("scancel", *jobs, check=False)
                deadline = time.monotonic() + 45
                while self.run("squeue", "-h", "-o", "%i", check=False).stdout.split() and time.monotonic() < deadline:
                    time.sleep(1)
        for daemon in reversed(self.daemons):  # slurmd, slurmctld, munged: the processes this test started
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path / "slurm")
    yield cluster
    cluster.stop()


def records(run_dir: Path, kind=None) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if kind is None or record["kind"] == kind:
            found.append(record)
    return found


def seconds_per_step(data: Path, work: Path, env: dict) -> float:
    """The tiny run's step time on this machine now: the median of 40 steps, outside Slurm."""
    out = work / "calibration"
    subprocess.run([sys.executable, "-m", "tsf", "train", "--config", str(work / "tiny.yaml"), "--data", str(data),
                    "--out", str(out), "--max-steps", "40", "--no-tensorboard"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    times = sorted(4 / r["clips_per_s"] for r in records(out, "train")[10:])  # batch 4; past the first steps
    return times[len(times) // 2]


def write_recipe(path: Path, steps: int) -> None:
    path.write_text(f"""about:
  command: train
  reproduces: the tiny run of tests/test_slurm.py
model: tiny
drop_path_rate: 0.1      # stochastic depth: the RNG state must survive every restart
optimizer: adamw
lr: 0.002
betas: [0.9, 0.95]
weight_decay: 0.05
schedule: cosine
warmup_epochs: 1
grad_clip: 1.0
batch_size: 4
epochs: 1000
max_steps: {steps}
log_every: 1
checkpoint_every: {CHECKPOINT_EVERY}
num_workers: 0
device: cpu
tensorboard: true
""")


def test_requeue_and_time_limit_resume_to_the_uninterrupted_weights(cluster, tmp_path, capsys):
    from tsf.data.synth import generate

    started = time.monotonic()
    data = generate("appearance", tmp_path / "data", videos_per_class=40)
    write_recipe(tmp_path / "tiny.yaml", 30)
    step_s = seconds_per_step(data, tmp_path, cluster.env)
    # three jobs share the cores: a run should train ~150 s, well past the first time-limit warning (60-100 s in)
    slowdown = max(1.0, 3 / CPUS)
    steps = int(min(4000, max(8 * STEPS_PER_EPOCH, 150 / (step_s * slowdown))))
    write_recipe(tmp_path / "tiny.yaml", steps)
    env = {**cluster.env, "RECIPE": str(tmp_path / "tiny.yaml"), "DATA": str(data)}

    def submit(name: str, *options: str) -> str:
        result = subprocess.run([_tool("sbatch"), "--parsable", "--job-name", name, "--chdir", str(tmp_path),
                                 "--nodes", "1", "--gpus-per-node", "0", "--cpus-per-task", "1", *options, str(SCRIPT)],
                                env=env, capture_output=True, text=True, check=True)
        return result.stdout.strip().split(";")[0]

    jobs = {"straight": submit("straight"), "requeued": submit("requeued"),
            "limited": submit("limited", "--time", "2", "--signal", f"B:USR1@{WARNING_S}")}
    runs = {name: tmp_path / "runs" / name for name in jobs}  # the script's default RUN_DIR: runs/<job name>
    signalled = None  # (last step logged when scontrol requeue was sent, the checkpoint before it)
    states: dict[str, dict] = {}
    tick = 0
    while True:
        if time.monotonic() - started > TIMEOUT_S:
            pytest.fail(f"timed out after {TIMEOUT_S} s: {states}\n{_logs(tmp_path, cluster)}")
        if signalled is None:
            logged = [r["step"] for r in records(runs["requeued"], "train")]
            # mid-epoch, away from the periodic checkpoints, after the first epoch
            if logged and logged[-1] > STEPS_PER_EPOCH and 8 <= logged[-1] % STEPS_PER_EPOCH <= 24 \
                    and 5 <= logged[-1] % CHECKPOINT_EVERY <= 45:
                cluster.run("scontrol", "requeue", jobs["requeued"])
                before = max(logged[-1] // CHECKPOINT_EVERY * CHECKPOINT_EVERY, logged[-1] // STEPS_PER_EPOCH * STEPS_PER_EPOCH)
                signalled = (logged[-1], before)
        tick += 1
        if tick % 10 == 0:
            states = {name: cluster.job(job_id) for name, job_id in jobs.items()}
            for name, state in states.items():
                assert state.get("JobState") not in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), \
                    f"{name}: {state}\n{_logs(tmp_path, cluster)}"
            if states["straight"].get("JobState") == "COMPLETED" and "again" not in jobs:
                jobs["again"] = submit("straight")  # a resubmission under the same job name: the same run folder
            if all(state.get("JobState") == "COMPLETED" for state in states.values()) and "again" in states:
                break
        time.sleep(0.1)
    elapsed = time.monotonic() - started

    reference = load_checkpoint_file(runs["straight"] / "last.pt")
    assert reference["step"] == steps
    figures = [f"slurm: {steps} steps per run ({step_s * 1000:.0f} ms/step alone), {elapsed:.0f} s in all, "
               f"a requeued job waiting {CRED_EXPIRE_S} s (cred_expire) before it restarts"]
    for name in ("requeued", "limited"):
        final = load_checkpoint_file(runs[name] / "last.pt")
        assert final["step"] == steps
        deltas = [(final["state_dict"][k].double() - t.double()).abs().max().item() for k, t in reference["state_dict"].items()]
        for k, t in reference["state_dict"].items():
            assert torch.equal(final["state_dict"][k], t), f"{name}: {k} differs"
        for a, b in zip(reference["optimizer"]["state"].values(), final["optimizer"]["state"].values()):
            assert all(torch.equal(a[k], b[k]) for k in a), f"{name}: optimizer state differs"
        interrupted = records(runs[name], "interrupted")
        resumed = records(runs[name], "resume")
        assert interrupted and [r["step"] for r in interrupted] == [r["step"] for r in resumed], (interrupted, resumed)
        # every stop: no step after its checkpoint was logged before the restart, so none was lost
        train_steps = [r["step"] for r in records(runs[name], "train")]
        assert train_steps == list(range(1, steps + 1)), f"{name}: steps logged twice or missing"
        restarts = int(cluster.job(jobs[name])["Restarts"])
        assert restarts == len(interrupted)
        if name == "requeued":
            assert restarts == 1 and interrupted[0]["signal"] == "SIGTERM"
            last_logged, periodic = signalled
            stop = interrupted[0]["step"]
            # resumed where the signal stopped it (after the last periodic checkpoint, mid-epoch); how many
            # steps ran between sending and delivery depends on the machine's load, not on tsf
            assert periodic < last_logged <= stop and stop % STEPS_PER_EPOCH, (signalled, stop)
            figures.append(f"requeued mid-epoch: SIGTERM after step {last_logged} (last logged), checkpoint and resume "
                           f"at step {stop} (epoch {interrupted[0]['epoch']}, step {stop % STEPS_PER_EPOCH} of "
                           f"{STEPS_PER_EPOCH}); steps lost 0 (a kill -9 would have lost {last_logged - periodic}, back "
                           f"to step {periodic}); max |dw| vs uninterrupted {max(deltas)}")
        else:
            assert restarts >= 1 and all(r["signal"] == "SIGUSR1" for r in interrupted)
            figures.append(f"time limit 2 min, warning {WARNING_S} s before: {restarts} restart(s), stopped at steps "
                           f"{[r['step'] for r in interrupted]} on SIGUSR1, steps lost 0 each; max |dw| vs "
                           f"uninterrupted {max(deltas)}")
    with capsys.disabled():
        print("\n" + "\n".join(figures))
    # the time-limited job's log holds every attempt (--open-mode=append); a warning may come after the end
    log = (tmp_path / f"limited-{jobs['limited']}.out").read_text()
    assert log.count("resuming it") == restarts and log.count("time-limit warning") >= restarts
    again = (tmp_path / f"straight-{jobs['again']}.out").read_text()
    assert "runs/straight/last.pt exists: resuming it" in again  # and, finished, it had nothing left to do
    assert load_checkpoint_file(runs["straight"] / "last.pt")["step"] == steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs["limited"]))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))


def _logs(tmp_path: Path, cluster: Cluster) -> str:
    parts = []
    for path in sorted(tmp_path.glob("*.out")) + [cluster.root / "log" / "slurmctld.log"]:
        parts.append(f"--- {path.name}\n{path.read_text()[-2500:]}")
    return "\n".join(parts)
