"""Fault counting, non-finite detection, reward_fn error reporting and timeouts, signal handling."""

import math
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from trlx.faults import (
    FaultCounter,
    KLDivergenceError,
    NumericalFault,
    StopOnSignal,
    TrainingFaultError,
    check_kl,
    nonfinite,
)
from trlx.rewards.scoring import (
    NonFiniteRewardError,
    RewardError,
    RewardFunctionError,
    RewardTimeoutError,
    call_reward_fn,
    compute_scores,
)
from trlx.types import Generation, PromptBatch


class OneProcess:
    num_processes = 1


def test_fault_counter_stops_after_the_limit_in_a_row():
    faults = FaultCounter(limit=3)
    faults.record(NumericalFault("a"), "rollout", step=1)
    faults.record(NumericalFault("b"), "step", step=2)
    faults.reset()  # a good update in between
    faults.record(NumericalFault("c"), "step", step=3)
    faults.record(NumericalFault("d"), "evaluation", step=3)
    with pytest.raises(TrainingFaultError, match=r"3 rollouts/updates in a row .*=3\); the last one: e") as excinfo:
        faults.record(NumericalFault("e"), "step", step=4)
    assert str(excinfo.value.__cause__) == "e"
    assert faults.metrics() == {"faults/skipped_steps": 3, "faults/skipped_rollouts": 1}
    restored = FaultCounter(limit=3)
    restored.load_state_dict(faults.state_dict())
    assert restored == faults


def test_nonfinite_only_looks_under_the_mask():
    values = torch.tensor([[0.0, math.nan], [math.inf, 1.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert nonfinite({"values": values}, mask) == "values has 1 non-finite value(s) in sample(s) [1]"
    assert nonfinite({"values": values}, torch.tensor([[1, 0], [0, 1]])) is None
    assert (
        nonfinite({"loss": torch.tensor(1.0), "gradient norm": math.inf}) == "gradient norm has 1 non-finite value(s)"
    )


def test_kl_check():
    check_kl(3.0, None, step=5, latest=None)
    check_kl(3.0, 3.0, step=5, latest=None)
    with pytest.raises(KLDivergenceError, match=r"kl/mean 3\.5 exceeded method\.kl_max=3\.0 .*ckpts/checkpoint_00004"):
        check_kl(3.5, 3.0, step=5, latest=Path("ckpts/checkpoint_00004"))
    with pytest.raises(KLDivergenceError, match="no checkpoint had been saved yet"):
        check_kl(9.0, 3.0, step=5, latest=None)


PROMPTS = ["the movie was", "this film is"]


def generation(outputs=("good", "bad")):
    prompt = PromptBatch(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), PROMPTS, [{}, {}])
    return Generation(prompt, torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), list(outputs))


def test_raising_reward_fn_names_the_prompts_and_chains_the_cause():
    def broken(samples):
        raise KeyError("label")

    with pytest.raises(RewardFunctionError, match=r"reward_fn raised KeyError: 'label' -- .*'the movie was'") as e:
        call_reward_fn(broken, {"samples": ["x", "y"], "prompts": PROMPTS})
    assert isinstance(e.value.__cause__, KeyError)
    with pytest.raises(RewardFunctionError, match="ZeroDivisionError") as e:  # also from the timeout thread
        call_reward_fn(lambda samples: 1 / 0, {"samples": ["x"], "prompts": PROMPTS}, timeout_s=30)
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_reward_fn_timeout():
    release = threading.Event()
    assert call_reward_fn(lambda samples: [1.0], {"samples": ["x"]}, timeout_s=30) == [1.0]
    try:
        with pytest.raises(RewardTimeoutError, match=r"within train\.reward_timeout_s=0\.2 s .*'this film is'"):
            call_reward_fn(lambda samples: release.wait(30), {"samples": ["x"], "prompts": PROMPTS}, timeout_s=0.2)
    finally:
        release.set()


def test_nonfinite_reward_names_the_sample_and_malformed_ones_are_plain_reward_errors():
    with pytest.raises(
        NonFiniteRewardError, match=r"returned inf for score 1; rewards must be finite: 'this film isbad'"
    ):
        compute_scores(lambda outputs: [0.0, math.inf], generation(), tokenizer=None)
    for bad, message in (([1.0], "returned 1 scores for 2 samples"), ([1.0, None], "non-number for score 1")):
        with pytest.raises(RewardError, match=message) as e:
            compute_scores(lambda outputs, bad=bad: bad, generation(), tokenizer=None)
        assert not isinstance(e.value, NonFiniteRewardError)


def test_first_signal_asks_to_stop_second_exits_at_once():
    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stop:
        assert not stop.requested(OneProcess())
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested(OneProcess()) and stop.name == "SIGINT"
        assert stop.interruption("bye").code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
