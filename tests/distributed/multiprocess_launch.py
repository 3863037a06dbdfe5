"""Start `ppo_run.py` under `torchrun` with N processes (gloo on CPU) and collect what each process wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

RUNNER = Path(__file__).with_name("ppo_run.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunResult:
    out_dir: Path
    returncode: int
    log: str

    @property
    def metrics(self) -> list[dict[str, Any]]:
        path = self.out_dir / "ckpt" / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def reward_calls(self, rank: int) -> list[dict[str, Any]]:
        path = self.out_dir / f"rewards_{rank}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def weights(self, rank: int):
        return load_file(str(self.out_dir / f"weights_{rank}.safetensors"))


def run_ppo(
    model_dir: Path, out_dir: Path, overrides: dict[str, Any], nproc: int = 2, env: dict[str, str] | None = None
) -> RunResult:
    """Run the tiny PPO job on `nproc` local processes; `env` adds variables (e.g. ACCELERATE_USE_DEEPSPEED)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(TORCHRUN), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    cmd += [str(RUNNER), str(model_dir), str(out_dir), json.dumps(overrides)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    try:
        proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:  # ppo_run.py dumps stacks after TRLX_TEST_HANG_S; show them
        output = "".join(
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)
        )
        raise AssertionError(f"torchrun did not finish in 300 s:\n{output[-6000:]}") from None
    return RunResult(out_dir, proc.returncode, proc.stdout + proc.stderr)
