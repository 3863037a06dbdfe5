"""Guards that keep a long run alive, or stop it clearly: numeric faults, KL blow-up and Ctrl-C / SIGTERM.

A non-finite reward, log-prob, loss or gradient spoils one rollout or one update, not the run: the loop skips
it, warns, and counts it in `faults/skipped_rollouts` / `faults/skipped_steps`. Only when faults keep coming
(`train.max_consecutive_faults` in a row) does the run stop, because then something is systematically wrong.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from torch import Tensor

from trlx.distributed import global_sum

logger = logging.getLogger(__name__)

RESUME_HINT = (
    "Resume with:  trlx train CONFIG train.resume_from_checkpoint=latest\n"
    "or in Python: trlx.train(..., config=config.evolve(**{'train.resume_from_checkpoint': 'latest'}))"
)


class NumericalFault(Exception):
    """A non-finite value made one rollout or update unusable; the loop skips it and counts it."""


class TrainingFaultError(RuntimeError):
    """Too many rollouts or updates in a row were skipped for non-finite values."""


class KLDivergenceError(RuntimeError):
    """The policy moved further from the reference than `method.kl_max` allows."""


class TrainingInterrupted(SystemExit):
    """SIGINT / SIGTERM stopped the run after a checkpoint was written.

    A SystemExit so that a script ends with exit status 128 + signal number and no traceback; the message
    (printed before raising) says how to resume. Catch it to continue after an interrupted `trlx.train`.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(128 + signum)
        self.message = message
        self.signum = signum

    def __str__(self) -> str:
        return self.message


@dataclass
class FaultCounter:
    """Counts skipped rollouts and updates, and stops the run after `limit` faults in a row."""

    limit: int
    skipped_steps: int = 0
    skipped_rollouts: int = 0
    consecutive: int = 0

    def record(self, fault: NumericalFault, kind: Literal["step", "rollout", "evaluation"], step: int) -> None:
        if kind == "step":
            self.skipped_steps += 1
        elif kind == "rollout":
            self.skipped_rollouts += 1
        self.consecutive += 1
        if self.consecutive >= self.limit:
            raise TrainingFaultError(
                f"stopping at step {step}: {self.consecutive} rollouts/updates in a row were skipped for non-finite "
                f"values (train.max_consecutive_faults={self.limit}); the last one: {fault}. Checkpoints already "
                "saved are intact; check the reward function, lower optimizer.kwargs.lr, or raise "
                "train.max_consecutive_faults"
            ) from fault
        logger.warning("trlx: skipped %s at step %d (%d in a row): %s", kind, step, self.consecutive, fault)

    def reset(self) -> None:
        """A successful update ends the run of faults."""
        self.consecutive = 0

    def metrics(self) -> dict[str, int]:
        return {"faults/skipped_steps": self.skipped_steps, "faults/skipped_rollouts": self.skipped_rollouts}

    def state_dict(self) -> dict[str, int]:
        return {
            "skipped_steps": self.skipped_steps,
            "skipped_rollouts": self.skipped_rollouts,
            "consecutive": self.consecutive,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped_steps = int(state["skipped_steps"])
        self.skipped_rollouts = int(state["skipped_rollouts"])
        self.consecutive = int(state["consecutive"])


def nonfinite(tensors: dict[str, Tensor | float], mask: Tensor | None = None) -> str | None:
    """A description of the first entry with non-finite values (only where `mask` is set), or None.

    tensors: name -> (B, T) tensor (or a float); mask: (B, T), nonzero where values are real.
    """
    for name, value in tensors.items():
        value = torch.as_tensor(value)
        bad = ~torch.isfinite(value)
        if mask is not None and bad.shape == mask.shape:
            bad &= mask.bool()
        if bad.any():
            rows = sorted({int(i) for i in bad.nonzero()[:, 0].tolist()}) if bad.dim() else []
            where = f" in sample(s) {rows[:8]}" if rows else ""
            return f"{name} has {int(bad.sum())} non-finite value(s){where}"
    return None


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """True on every process if `flag` is true on any, so all processes skip (or stop) together."""
    if accelerator.num_processes == 1:
        return flag
    return bool(global_sum(accelerator, torch.tensor([float(flag)])).item() > 0)


def check_kl(kl_mean: float, kl_max: float | None, step: int, latest: Path | None) -> None:
    """Stop the run when a rollout's mean per-sequence KL to the reference exceeds `method.kl_max`."""
    if kl_max is None or kl_mean <= kl_max:
        return
    saved = f"the last checkpoint, {latest}, is intact" if latest is not None else "no checkpoint had been saved yet"
    raise KLDivergenceError(
        f"kl/mean {kl_mean:.4g} exceeded method.kl_max={kl_max} in the rollout after step {step}: the policy has "
        f"drifted too far from the reference. Stopped without saving; {saved}. Lower optimizer.kwargs.lr, raise "
        "method.init_kl_coef (or set method.target), or raise method.kl_max"
    )


class StopOnSignal:
    """Within `with`: the first SIGINT/SIGTERM asks the loop to stop after the current step; a second exits now.

    Handlers are only installed from the main thread (Python allows no other); elsewhere signals keep their
    usual meaning.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        # os.write, not print: the handler may run while the main thread is inside a write to stderr.
        message = (
            f"\ntrlx: {signal.Signals(signum).name} received: finishing the current step and saving a checkpoint "
            "(press Ctrl-C again to exit at once)\n"
        )
        os.write(2, message.encode())

    def requested(self, accelerator: Accelerator) -> bool:
        """Whether any process got a signal; every process calls this at the same points of the loop."""
        self.stopping = any_process(accelerator, self.signum is not None)
        return self.stopping

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    def interruption(self, message: str) -> TrainingInterrupted:
        """The exception that ends the run (processes that got no signal themselves exit as if from SIGINT)."""
        return TrainingInterrupted(message, int(self.signum or signal.SIGINT))
