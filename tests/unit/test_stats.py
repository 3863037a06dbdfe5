import numpy as np
import pytest
import torch

from trlx.algorithms.stats import (
    RunningMoments,
    explained_variance,
    masked_mean,
    masked_sums,
    masked_var,
    masked_whiten,
    moments_from_sums,
)

INF, NAN = float("inf"), float("nan")


def test_masked_mean_and_var_hand_computed_with_garbage_padding():
    # Valid entries 1, 2, 4: mean = 7/3. Deviations -4/3, -1/3, 5/3; squares sum to (16 + 1 + 25)/9 = 42/9.
    # Biased var = 42/27 = 14/9, unbiased = 42/18 = 7/3. Per-row means: (1 + 2)/2 = 1.5 and 4.
    x = torch.tensor([[1.0, 2.0, INF], [4.0, NAN, -INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor(7 / 3))
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_var(x, mask), torch.tensor(7 / 3))
    torch.testing.assert_close(masked_var(x, mask.bool(), unbiased=False), torch.tensor(14 / 9))


def test_masked_var_errors():
    with pytest.raises(ValueError, match="no valid entries"):
        masked_var(torch.ones(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(torch.ones(2, 2), torch.tensor([[1, 0], [0, 0]]))
    assert masked_var(torch.ones(2, 2), torch.tensor([[1, 0], [0, 0]]), unbiased=False).item() == 0.0


def _ragged(seed: int, batch_size: int = 5, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = 3.0 + 2.0 * torch.randn(batch_size, length, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, length + 1, (batch_size,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    x[~mask] = 1e6  # padding that would dominate any statistic it leaked into
    return x, mask


def test_masked_whiten_matches_numpy_on_valid_subset():
    x, mask = _ragged(0)
    valid = x[mask].numpy()
    expected = (valid - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)
    whitened = masked_whiten(x, mask)
    np.testing.assert_allclose(whitened[mask].numpy(), expected, rtol=1e-10)
    assert (whitened[~mask] == 0).all()
    assert abs(whitened[mask].mean().item()) < 1e-10

    unshifted = masked_whiten(x, mask, shift_mean=False)
    np.testing.assert_allclose(unshifted[mask].numpy(), expected + valid.mean(), rtol=1e-10)
    assert (unshifted[~mask] == 0).all()


def test_masked_whiten_uses_given_global_statistics():
    x, mask = _ragged(1)
    mean, var = torch.tensor(10.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)
    whitened = masked_whiten(x, mask, mean=mean, var=var, eps=0.0)
    torch.testing.assert_close(whitened[mask], (x[mask] - 10.0) / 2.0)
    assert (whitened[~mask] == 0).all()


def test_masked_sums_combine_like_an_all_reduce():
    # Two "processes" with different ragged batches: summing their sufficient statistics must give the
    # moments of the concatenated valid entries.
    (x0, m0), (x1, m1) = _ragged(2), _ragged(3, batch_size=3, length=6)
    sums = [masked_sums(x0, m0), masked_sums(x1, m1)]
    assert all(t.dtype == torch.float64 and t.dim() == 0 for t in sums[0])
    total, total_sq, count = (sums[0][i] + sums[1][i] for i in range(3))
    mean, var = moments_from_sums(total, total_sq, count)
    _, var_biased = moments_from_sums(total, total_sq, count, unbiased=False)
    every = np.concatenate([x0[m0].numpy(), x1[m1].numpy()])
    assert count.item() == every.size
    np.testing.assert_allclose(mean.item(), every.mean(), rtol=1e-12)
    np.testing.assert_allclose(var.item(), every.var(ddof=1), rtol=1e-9)
    np.testing.assert_allclose(var_biased.item(), every.var(), rtol=1e-9)


def test_explained_variance_hand_computed():
    # returns [1, 2, 3] (var 2/3 biased). values [1, 2, 2]: residual [0, 0, 1] has mean 1/3, var 2/9.
    # EV = 1 - (2/9)/(2/3) = 2/3. Perfect values give 1; the padded column must not count.
    returns = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(
        explained_variance(torch.tensor([[1.0, 2.0, 2.0, -5.0]]), returns, mask), torch.tensor(2 / 3)
    )
    torch.testing.assert_close(explained_variance(returns.clone(), returns, mask), torch.tensor(1.0))
    # A constant prediction explains nothing.
    torch.testing.assert_close(explained_variance(torch.full((1, 4), 7.0), returns, mask), torch.tensor(0.0))


def test_running_moments_match_numpy_on_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 3.0, size=n) for n in (5, 17, 3, 40)]
    moments = RunningMoments()
    assert moments.std == 1.0
    for i, batch in enumerate(batches):
        batch_mean, batch_std = moments.update(batch.mean(), batch.var(), batch.size)
        seen = np.concatenate(batches[: i + 1])
        np.testing.assert_allclose(batch_mean, batch.mean(), rtol=1e-12)
        np.testing.assert_allclose(batch_std, batch.std(ddof=1), rtol=1e-12)
        np.testing.assert_allclose(moments.mean, seen.mean(), rtol=1e-9)
        np.testing.assert_allclose(moments.var, seen.var(), rtol=1e-9)
        np.testing.assert_allclose(moments.std, seen.std(ddof=1), rtol=1e-9)


def test_running_moments_state_dict_resume():
    moments = RunningMoments()
    moments.update(1.0, 4.0, 10)
    resumed = RunningMoments()
    resumed.load_state_dict(moments.state_dict())
    assert resumed == moments
    assert moments.update(3.0, 1.0, 5) == resumed.update(3.0, 1.0, 5)
    assert resumed.state_dict() == moments.state_dict()
    with pytest.raises(ValueError, match="batch_count"):
        moments.update(0.0, 1.0, 0)
