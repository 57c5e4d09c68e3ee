"""Stopping a run cleanly on a signal: preemption, ``scancel``, ``scontrol requeue``, a cluster's
time-limit warning, Ctrl-C.

Within ``stop_on_signals()`` SIGTERM, SIGINT and SIGUSR1 do not end the process: the first one is
recorded (``stop_requested()``) and the next ones are ignored, so nothing half-done (a checkpoint
being written) is cut off. ``Trainer.fit`` runs inside it and looks once per optimiser step: under
DDP the ranks add up their flags with the step's metrics, so all of them stop after the same step;
then the callbacks' ``on_interrupt`` writes ``last.pt`` (``Checkpointer``) and ``fit`` raises
``TrainingInterrupted``. ``python -m tsf train`` turns that into exit code ``INTERRUPTED_EXIT_CODE``
(75, ``EX_TEMPFAIL``: try again later, with ``--resume RUN_DIR``). SIGKILL cannot be caught: after
``kill -9`` the run resumes from the last periodic checkpoint.

Data-loading worker processes ignore the three signals (``runtime.ignore_stop_signals``, their
``worker_init_fn``): a signal sent to every process (Ctrl-C, a Slurm job step) would otherwise end
them under the training process, which shuts them down itself.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator, Optional

from ..runtime import STOP_SIGNALS

INTERRUPTED_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, the user is invited to retry

_state: dict = {"depth": 0, "previous": {}, "received": None, "count": 0}


class TrainingInterrupted(Exception):
    """A stop signal ended ``Trainer.fit`` after a whole optimiser step.

    Attributes:
        signal_name: ``"SIGTERM"``, ``"SIGINT"`` or ``"SIGUSR1"`` (the first received by this
            process; ``"another process's signal"`` when only a peer rank received one).
        step: optimiser steps taken; the run continues from the next one.
        epoch: the epoch in progress.
        checkpoint: the ``last.pt`` written at ``step``, or None (no run folder, or no
            ``Checkpointer`` among the callbacks).
    """

    def __init__(self, signal_name: str, step: int, epoch: int, checkpoint: Optional[str]):
        self.signal_name, self.step, self.epoch, self.checkpoint = signal_name, step, epoch, checkpoint
        kept = f"{checkpoint} holds it" if checkpoint else "no checkpoint was written (no run folder)"
        super().__init__(f"stopped by {signal_name} after step {step} (epoch {epoch}); {kept}")


def _record(signum: int, frame) -> None:
    # os.write, not print: a handler may run while the main thread is inside a print to the same stream
    if _state["received"] is None:
        _state["received"] = signum
    if _state["count"] == 0 and os.environ.get("RANK", "0") == "0":  # one line per run, not per process
        os.write(2, (f"\ntsf: {signal.Signals(signum).name} received: stopping after this step (and writing "
                     f"last.pt); further SIGTERM/SIGINT/SIGUSR1 are ignored until then (SIGKILL is not)\n").encode())
    _state["count"] += 1


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Record SIGTERM, SIGINT and SIGUSR1 instead of dying of them, for the duration of the block.

    Nested blocks share one record; the outermost restores the handlers it found and forgets the
    signal. Off the main thread (where Python cannot install handlers) it does nothing.
    """
    outermost = _state["depth"] == 0
    if outermost and threading.current_thread() is not threading.main_thread():
        yield
        return
    if outermost:
        _state.update(received=None, count=0, previous={s: signal.signal(s, _record) for s in STOP_SIGNALS})
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for sig, handler in _state["previous"].items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
            _state.update(previous={}, received=None, count=0)


def stop_requested() -> bool:
    """Whether this process received a stop signal inside ``stop_on_signals()``."""
    return _state["received"] is not None


def received_signal() -> Optional[str]:
    """The name of the first stop signal this process received, or None."""
    return signal.Signals(_state["received"]).name if _state["received"] is not None else None


def signals_received() -> int:
    """How many stop signals this process received (the first one and those it ignored)."""
    return _state["count"]

