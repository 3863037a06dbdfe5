import math

import pytest
import torch

from trlx.algorithms.kl import AdaptiveKLController, FixedKLController, kl_penalty, make_kl_controller


def test_kl_estimators_on_known_values():
    # p(x) = 0.5 under the policy, q(x) = 0.25 under the reference: log r = log(q/p) = log 0.5 = -0.6931472
    #   k1 = -log r               = 0.6931472
    #   k2 = 0.5 * (log r)^2      = 0.5 * 0.4804530 = 0.2402265
    #   k3 = (r - 1) - log r      = -0.5 + 0.6931472 = 0.1931472
    logprobs = torch.tensor([[math.log(0.5)]])
    ref_logprobs = torch.tensor([[math.log(0.25)]])
    torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, "k1"), torch.tensor([[0.6931472]]))
    torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, "k2"), torch.tensor([[0.2402265]]))
    torch.testing.assert_close(kl_penalty(logprobs, ref_logprobs, "k3"), torch.tensor([[0.1931472]]))
    # Identical distributions: every estimator is exactly 0.
    for estimator in ("k1", "k2", "k3"):
        assert (kl_penalty(logprobs, logprobs, estimator) == 0).all()


def test_k3_and_k2_never_negative_k1_can_be():
    generator = torch.Generator().manual_seed(0)
    logprobs = 5 * torch.randn(64, 32, generator=generator)
    ref_logprobs = 5 * torch.randn(64, 32, generator=generator)
    assert (kl_penalty(logprobs, ref_logprobs, "k3") >= 0).all()
    assert (kl_penalty(logprobs, ref_logprobs, "k2") >= 0).all()
    assert (kl_penalty(logprobs, ref_logprobs, "k1") < 0).any()


def test_k1_and_k3_are_unbiased_estimates_of_kl_policy_ref():
    # Sample from p and check the sample means against the exact KL(p || q) = sum p log(p/q).
    generator = torch.Generator().manual_seed(0)
    p = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64)
    q = torch.tensor([0.1, 0.3, 0.3, 0.3], dtype=torch.float64)
    exact = (p * (p / q).log()).sum()  # 0.7 ln 7 - 0.3 ln 3 = 1.0326
    samples = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    logprobs, ref_logprobs = p.log()[samples].unsqueeze(0), q.log()[samples].unsqueeze(0)
    for estimator in ("k1", "k3"):
        estimate = kl_penalty(logprobs, ref_logprobs, estimator).mean()
        assert abs(estimate - exact) < 0.02, (estimator, estimate, exact)
    # The reverse direction KL(q || p) differs; a swapped sign/argument order would land there instead.
    reverse = (q * (q / p).log()).sum()  # 0.9 ln 3 - 0.1 ln 7 = 0.7942
    assert abs(reverse - exact) > 0.2


def test_unknown_estimator_names_allowed_values():
    with pytest.raises(ValueError, match=r"\['k1', 'k2', 'k3'\].*'k4'"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_adaptive_controller_update():
    # target 6, horizon 10000, n_steps 100 -> K_beta = 0.01
    #   KL = 12:  error = clip(12/6 - 1) = clip(1.0) = 0.2  -> beta = 0.1 * (1 + 0.002)  = 0.1002
    #   KL = 6.6: error = 0.1                               -> beta = 0.1 * (1 + 0.001)  = 0.1001
    #   KL = 0:   error = clip(-1.0) = -0.2                 -> beta = 0.1 * (1 - 0.002)  = 0.0998
    #   KL = 6:   error = 0                                 -> unchanged
    for current_kl, expected in [(12.0, 0.1002), (6.6, 0.1001), (0.0, 0.0998), (6.0, 0.1)]:
        controller = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
        controller.update(current_kl, n_steps=100)
        assert controller.value == pytest.approx(expected, rel=1e-12)


def test_adaptive_controller_compounds_and_resumes_from_state_dict():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=1.0, horizon=100)
    controller.update(current_kl=5.0, n_steps=10)  # 0.2 * 1.02
    saved = controller.state_dict()
    controller.update(current_kl=5.0, n_steps=10)  # 0.2 * 1.02^2
    assert controller.value == pytest.approx(0.2 * 1.02**2)
    resumed = AdaptiveKLController(init_kl_coef=0.2, target=1.0, horizon=100)
    resumed.load_state_dict(saved)
    resumed.update(current_kl=5.0, n_steps=10)
    assert resumed.value == controller.value


def test_fixed_controller_and_factory():
    fixed = make_kl_controller(0.05, target=None, horizon=10000)
    assert isinstance(fixed, FixedKLController)
    fixed.update(current_kl=100.0, n_steps=1000)
    assert fixed.value == 0.05
    fixed.load_state_dict({"value": 0.3})
    assert fixed.state_dict() == {"value": 0.3}
    adaptive = make_kl_controller(0.05, target=6.0, horizon=10000)
    assert isinstance(adaptive, AdaptiveKLController)
    assert (adaptive.value, adaptive.target, adaptive.horizon) == (0.05, 6.0, 10000)


def test_adaptive_controller_validates_arguments():
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.1, target=1.0, horizon=0)
