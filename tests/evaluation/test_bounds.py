"""Data-set-level bounds: the importance-sampled log-likelihood against exact PPCA log p(x)."""

from __future__ import annotations

import math
import signal
import threading
import time

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal, StudentT

from avi.data import Dataset
from avi.errors import ConfigError
from avi.evaluation import cubo_per_point, elbo_per_point, log_likelihood, mean_elbo
from avi.evaluation.importance import NoiseStream
from avi.families import make_family
from avi.inference import LocalPosterior
from avi.models import LinearGaussian
from tests.closed_forms import linear_gaussian_elbo, prior_kl


def _imperfect_posterior(ppca: LinearGaussian, x: Tensor, shift: float = 0.5, stretch: float = 1.3) -> LocalPosterior:
    """A per-point full-rank q with its mean off by ``shift`` sds and its scale ``stretch``-ed."""
    post = ppca.exact_posterior(x)
    q = MultivariateNormal(post.mean + shift * post.stddev, covariance_matrix=post.covariance_matrix * stretch**2)
    family = make_family("full-rank", 2)
    return LocalPosterior(x.shape[0], family, initial=family.params_of(q))


def _exact_posterior(ppca: LinearGaussian, x: Tensor) -> LocalPosterior:
    return _imperfect_posterior(ppca, x, shift=0.0, stretch=1.0)


@pytest.mark.statistical
def test_iwae_5000_is_within_three_standard_errors_of_log_marginal(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # log_likelihood returns per-point estimates and jackknife standard errors (with weights
    # this tame, close to the delta method's sqrt(Var(w) / (k E[w]^2))). The estimate
    # log mean(w) is biased low by about se^2 / 2, negligible here (se about 0.03, bias 5e-4).
    # Per point we allow 4 se (50 points: false-alarm rate about 50 * 6.3e-5); the mean over
    # points, whose errors are independent,
    # has standard error sqrt(sum se_i^2) / N and must be within 3 of those.
    posterior = _imperfect_posterior(ppca, ppca_x)
    ll = log_likelihood(ppca, posterior, ppca_x, k=5000, batch_size=16, chunk_size=700)
    exact = ppca.exact_log_marginal(ppca_x)
    assert ll.k == 5000 and ll.value.shape == ll.stderr.shape == (50,)
    assert ((ll.value - exact).abs() < 4 * ll.stderr).all()
    mean_se = ll.stderr.pow(2).sum().sqrt() / 50
    assert (ll.value - exact).mean().abs() < 3 * mean_se
    # power: q is 2 nats per point away in ELBO, and the estimate resolves 2.5% of that
    gap = exact - linear_gaussian_elbo(ppca, posterior(ppca_x, torch.arange(50)), ppca_x)
    assert (gap > 1).all() and (ll.stderr < 0.05).all()


@pytest.mark.statistical
def test_standard_error_and_bias_match_repeated_estimates(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # R = 2000 independent k = 500 estimates for one point (the point repeated R times).
    # - Their sample variance has relative standard error sqrt(2 / (R - 1)) = 3.2% for
    #   near-Gaussian estimates; the mean reported se^2 is the delete-1 jackknife variance,
    #   accurate to O(1/k) for weights this tame (measured 0.96). A ratio within 15% is about 5
    #   standard errors. The same holds for the debiased estimate and its delete-a-group
    #   jackknife variance (measured 0.96).
    # - The bias of log mean(w) is -Var(w) / (2 k E[w]^2) + O(1/k^2) = -se^2 / 2 (Burda et al.
    #   2016, from the delta method); the mean of the R estimates has standard error
    #   sd / sqrt(R), and the measured bias must be within 3 of those of se^2 / 2 (it is
    #   below log p(x) in any case: a bias of the wrong sign would fail). The debiased estimate's
    #   bias is O(1/k^2): its mean must be within 3 standard errors of log p(x) itself.
    r, x = 2000, ppca_x[:1].expand(2000, -1).contiguous()
    posterior = _imperfect_posterior(ppca, x)
    ll = log_likelihood(ppca, posterior, x, k=500, batch_size=500, chunk_size=250)
    assert ll.debiased is not None and ll.debiased_stderr is not None
    for value, stderr in ((ll.value, ll.stderr), (ll.debiased, ll.debiased_stderr)):
        ratio = stderr.pow(2).mean() / value.var()
        assert 0.85 < ratio < 1.15, ratio.item()
    exact = ppca.exact_log_marginal(ppca_x[:1])[0]
    predicted = ll.stderr.pow(2).mean() / 2
    assert abs(exact - ll.value.mean() - predicted) < 3 * ll.value.std() / math.sqrt(r)
    assert abs(exact - ll.debiased.mean()) < 3 * ll.debiased.std() / math.sqrt(r)


@pytest.mark.parametrize(("k", "batch_size", "chunk_size"), [(1, 100, 500), (7, 4, 3), (10, 50, 10), (23, 7, 5)])
def test_exact_proposal_gives_log_marginal_with_zero_error(
    ppca: LinearGaussian, ppca_x: Tensor, k: int, batch_size: int, chunk_size: int
) -> None:
    # q = p(z|x): every weight equals p(x), so any k, batch or chunk split must return log p(x)
    # exactly (this checks the chunks' concatenation and the final -log k), and so must the
    # debiased estimate; the spreads are zero where the jackknife has them (the delete-1 one from
    # k = 2, the delete-a-group one from k = 3: 3 groups) and undefined (NaN) below, and all k
    # samples are effective.
    seen: list[int] = []
    ll = log_likelihood(
        ppca,
        _exact_posterior(ppca, ppca_x),
        ppca_x,
        k=k,
        batch_size=batch_size,
        chunk_size=chunk_size,
        on_batch=seen.append,
    )
    exact = ppca.exact_log_marginal(ppca_x)
    torch.testing.assert_close(ll.value, exact, rtol=1e-10, atol=1e-10)
    assert ll.debiased is not None and ll.debiased_stderr is not None and ll.ess is not None
    assert ll.pareto_k is not None and ll.pareto_k.shape == (50,)
    assert (ll.stderr < 1e-6).all() if k >= 2 else ll.stderr.isnan().all()
    assert (ll.debiased_stderr < 1e-6).all() if k >= 3 else ll.debiased_stderr.isnan().all()
    if k >= 2:
        torch.testing.assert_close(ll.debiased, exact, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ll.ess, torch.full_like(exact, k))
    assert sum(seen) == 50 and len(seen) == math.ceil(50 / batch_size)


def test_elbo_per_point(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    posterior = _imperfect_posterior(ppca, ppca_x)
    q = posterior(ppca_x, torch.arange(50))
    value, reconstruction, kl = elbo_per_point(ppca, posterior, ppca_x, batch_size=16)
    assert value.shape == reconstruction.shape == kl.shape == (50,)
    torch.testing.assert_close(value, reconstruction - kl)
    torch.testing.assert_close(kl, prior_kl(q))  # analytic where torch has it
    # with many samples the reconstruction term approaches the closed form: 2000 samples give
    # a standard error of about sd/45 ~ 0.05 nats; allow 0.2 at each point
    value, _, _ = elbo_per_point(ppca, posterior, ppca_x, num_samples=2000)
    assert (value - linear_gaussian_elbo(ppca, q, ppca_x)).abs().max() < 0.2
    torch.manual_seed(4)
    expected = elbo_per_point(ppca, posterior, Dataset(ppca_x))[0].mean().item()
    torch.manual_seed(4)
    assert mean_elbo(ppca, posterior, ppca_x) == pytest.approx(expected)


class _StudentPosterior(nn.Module):
    """q(z|x) with no analytic KL to the Gaussian prior."""

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        loc = torch.zeros(x.shape[0], 2, dtype=x.dtype)
        return Independent(StudentT(5.0, loc, torch.ones_like(loc)), 1)


def test_elbo_falls_back_to_monte_carlo_kl(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    value, reconstruction, kl = elbo_per_point(ppca, _StudentPosterior(), ppca_x)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value, reconstruction - kl)


def test_dynamic_data_must_be_binarised_first(ppca: LinearGaussian) -> None:
    data = Dataset(torch.rand(10, 5, dtype=torch.float64), dynamic=True)
    posterior = LocalPosterior(10, make_family("mean-field", 2)).double()
    with pytest.raises(ConfigError, match="fixed binarisation"):
        log_likelihood(ppca, posterior, data, k=2)
    with pytest.raises(ConfigError, match="fixed binarisation"):
        mean_elbo(ppca, posterior, data)
    log_likelihood(ppca, posterior, data.binarized(0), k=2)


@pytest.mark.parametrize(("k", "batch_size", "chunk_size"), [(0, 10, 10), (5, 0, 10), (5, 10, 0)])
def test_bad_sizes_are_config_errors(
    ppca: LinearGaussian, ppca_x: Tensor, k: int, batch_size: int, chunk_size: int
) -> None:
    with pytest.raises(ConfigError):
        log_likelihood(
            ppca,
            _exact_posterior(ppca, ppca_x),
            ppca_x,
            k=k,
            batch_size=batch_size,
            chunk_size=chunk_size,
        )


def test_cubo_of_the_exact_posterior_is_log_marginal(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # every weight is p(x): (1/n) log mean w^n = log p(x) and the weights do not vary
    result = cubo_per_point(ppca, _exact_posterior(ppca, ppca_x), ppca_x, n=2.0, k=50, chunk_size=16)
    torch.testing.assert_close(result.value, ppca.exact_log_marginal(ppca_x))
    assert result.stderr.max() < 1e-6


def test_chunked_cubo_equals_the_estimator_on_the_same_draws(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # chunks of 8 of 32 samples, 7 points per batch: the estimate is (1/n) log (1/k) sum_i w_i^n
    # of the 32 weights that each point's noise stream gives (z = m + L eps)
    posterior = _imperfect_posterior(ppca, ppca_x)
    index = torch.arange(ppca_x.shape[0])
    chunked = cubo_per_point(ppca, posterior, ppca_x, n=3.0, k=32, chunk_size=8, batch_size=7, seed=9).value
    q = posterior(ppca_x, index)
    eps = NoiseStream(9, index, 2, torch.float64, ppca_x.device).read(32).transpose(0, 1)  # (S, B, K)
    z = q.loc + (eps[..., None, :] * q.scale_tril).sum(-1)
    log_w = ppca.log_joint(ppca_x, z) - q.log_prob(z)
    direct = (torch.logsumexp(3.0 * log_w, 0) - math.log(32)) / 3.0
    torch.testing.assert_close(chunked, direct)


@pytest.mark.statistical
def test_elbo_log_marginal_cubo_sandwich(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # q's mean off by 0.5 sd, its covariance 1.69 times the posterior's: log p(x) - ELBO = 2.0
    # nats and CUBO_2 - log p(x) = 0.87 for every point (tests/objectives/test_cubo.py). With
    # k = 2,000 samples the estimate's downward bias is below 0.01 nats (measured); averaged over
    # the 50 points its standard error is sqrt(sum se_i^2) / 50 by the delta method. Both sides
    # of the sandwich must hold by more than 4 standard errors, and the mean CUBO must be within
    # 4 standard errors plus 0.02 nats of the closed form.
    posterior = _imperfect_posterior(ppca, ppca_x)
    log_px = ppca.exact_log_marginal(ppca_x).mean()
    upper = cubo_per_point(ppca, posterior, ppca_x, n=2.0, k=2000)
    mean, se = upper.value.mean(), upper.stderr.pow(2).sum().sqrt() / ppca_x.shape[0]
    assert mean - log_px > 4 * se
    assert abs(mean - log_px - 0.867) < 4 * se + 0.02
    assert elbo_per_point(ppca, posterior, ppca_x, num_samples=100)[0].mean() < log_px - 1.5


def test_cubo_order_must_exceed_one(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    with pytest.raises(ConfigError, match="greater than 1"):
        cubo_per_point(ppca, _exact_posterior(ppca, ppca_x), ppca_x, n=1.0, k=5)


def test_an_interrupt_stops_every_worker_within_a_chunk(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # Ctrl-C reaches the main thread, which waits for 2 workers of 25 points x 10^7 samples
    # (minutes of work); both stop before their next chunk of 1,000 samples, so the interrupt
    # propagates at once, no batch completes after it, no worker thread is left running, and
    # the caller's intra-op thread count is restored. A worker's own error stops the others too.
    posterior = _exact_posterior(ppca, ppca_x)
    done: list[int] = []
    before = threading.active_count()
    timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        log_likelihood(ppca, posterior, ppca_x, k=10**7, batch_size=1, chunk_size=1000, threads=2, on_batch=done.append)
    assert time.perf_counter() - started < 5
    timer.join()
    assert threading.active_count() == before and done == []
    assert torch.get_num_threads() == 1

    class Failing(nn.Module):
        """The posterior, failing for the second worker's points (25 to 49) at its first batch."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = posterior

        def forward(self, x: Tensor, index: Tensor) -> Distribution:
            if index.min() >= 25:
                raise RuntimeError("the second worker failed")
            return self.inner(x, index)

    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="second worker failed"):
        log_likelihood(ppca, Failing(), ppca_x, k=10**7, batch_size=1, chunk_size=1000, threads=2)
    assert time.perf_counter() - started < 5
    assert threading.active_count() == before
