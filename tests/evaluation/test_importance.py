"""Evaluation log weights: per-point noise streams, the fast Bernoulli-MLP path against the
generic densities, estimates independent of batching, chunking and sharding, bf16 accuracy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor

from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.evaluation import cubo_per_point, log_likelihood
from avi.evaluation import importance
from avi.evaluation.bounds import COMPILED_ROWS, MAX_BUDGET_MIB, MIN_POINTS, RESERVE_MIB, TARGET_ROWS, chunk_sizes
from avi.evaluation.importance import (
    SAMPLE_BLOCK,
    NoiseStream,
    chunk_log_weights,
    compiled_decoder,
    decoder_copy_bytes,
    fast_decoder,
    row_bytes,
)
from avi.precision import bf16_supported
from avi.families import make_family
from avi.inference import LocalPosterior
from avi.models import LinearGaussian, VAEModel


def _vae(dtype: torch.dtype = torch.float32, hidden: tuple[int, ...] = (32,), family: str = "mean-field",
         activation: str = "relu") -> tuple[VAEModel, AmortizedPosterior, Tensor]:  # fmt: skip
    """A small Bernoulli VAE (D = 30, K = 3) with random weights, its encoder, and 13 binary points."""
    model = VAEModel(30, 3, hidden, activation).to(dtype)
    fam = make_family(family, 3)
    posterior = AmortizedPosterior(mlp_encoder(30, (16,), fam.param_size), fam).to(dtype)
    x = (torch.rand(13, 30, generator=torch.Generator().manual_seed(3)) < 0.4).to(dtype)
    return model, posterior, x


def _reference_log_weights(model, q, x: Tensor, eps: Tensor) -> Tensor:
    """log p(x, z) - log q(z) through torch.distributions, z = m + L eps, (B, S)."""
    if hasattr(q, "scale_tril"):
        z = q.loc[:, None] + eps @ q.scale_tril.transpose(-1, -2)
    else:
        z = q.mean[:, None] + q.stddev[:, None] * eps
    zs = z.transpose(0, 1)  # (S, B, K): the distributions' sample layout
    return (model.log_joint(x, zs) - q.log_prob(zs)).transpose(0, 1)


def test_noise_stream_reads_are_independent_of_their_sizes() -> None:
    index = torch.tensor([4, 9, 2])
    whole = NoiseStream(7, index, 3, torch.float64, torch.device("cpu")).read(2 * SAMPLE_BLOCK + 17)
    stream = NoiseStream(7, index, 3, torch.float64, torch.device("cpu"))
    pieces = torch.cat([stream.read(n) for n in (1, SAMPLE_BLOCK - 1, 30, SAMPLE_BLOCK - 13)], dim=1)
    assert torch.equal(pieces, whole)
    # a point's stream depends on (seed, index) only: point 9 alone, in another batch
    alone = NoiseStream(7, torch.tensor([9]), 3, torch.float64, torch.device("cpu")).read(2 * SAMPLE_BLOCK + 17)
    assert torch.equal(alone[0], whole[1])
    assert not torch.equal(whole[0], whole[1])
    other_seed = NoiseStream(8, index, 3, torch.float64, torch.device("cpu")).read(5)
    assert not torch.equal(other_seed, whole[:, :5])
    # standard normal: 3 x 217 x 3 draws, mean within 4 / sqrt(1953) and variance within 4 sqrt(2 / 1953)
    assert abs(whole.mean().item()) < 4 / math.sqrt(whole.numel())
    assert abs(whole.var().item() - 1) < 4 * math.sqrt(2 / whole.numel())


@pytest.mark.parametrize("family", ["mean-field", "full-rank"])
@pytest.mark.parametrize("hidden", [(32,), (24, 16), ()])
def test_fast_path_equals_the_distributions_on_the_same_noise(family: str, hidden: tuple[int, ...]) -> None:
    # float64: the fast path's algebra (h . W^T x + b . x - sum softplus via exp/log2) must agree
    # with Independent(Bernoulli(logits)).log_prob to rounding, for MLPs of any depth
    model, posterior, x = _vae(torch.float64, hidden, family)
    q = posterior(x)
    index = torch.arange(x.shape[0])
    fast = chunk_log_weights(model, q, x, 150, NoiseStream(1, index, 3, torch.float64, x.device))
    eps = NoiseStream(1, index, 3, torch.float64, x.device).read(150)
    torch.testing.assert_close(fast, _reference_log_weights(model, q, x, eps), rtol=1e-10, atol=1e-9)
    # float32: to float32 rounding of sums of 30 terms of size ~20 (atol 1e-4)
    eps32 = NoiseStream(1, index, 3, torch.float32, x.device).read(150)
    reference = _reference_log_weights(model, q, x, eps32.double())
    model32, posterior32 = copy.deepcopy(model).float(), copy.deepcopy(posterior).float()
    fast32 = chunk_log_weights(model32, posterior32(x.float()), x.float(), 150, NoiseStream(1, index, 3, torch.float32, x.device))
    assert fast32.dtype == torch.float32
    torch.testing.assert_close(fast32.double(), reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("activation", ["maxout", "gated"])
def test_fast_path_runs_wide_units_as_the_distributions_do(activation: str) -> None:
    # maxout and gated units reduce a widened layer: the fast path runs them through their own
    # forward, and must agree with Independent(Bernoulli(logits)).log_prob to float64 rounding
    model, posterior, x = _vae(torch.float64, (24, 16), activation=activation)
    q = posterior(x)
    index = torch.arange(x.shape[0])
    fast = chunk_log_weights(model, q, x, 150, NoiseStream(1, index, 3, torch.float64, x.device))
    eps = NoiseStream(1, index, 3, torch.float64, x.device).read(150)
    torch.testing.assert_close(fast, _reference_log_weights(model, q, x, eps), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_path_survives_logits_that_overflow_exp(precision: str) -> None:
    # a bias of 120 on half the pixels: e^l overflows float32 there, those rows are redone stably
    # (in bf16 too, from the same bf16 hidden units); equal to the float64 densities within
    # float32 rounding of ~2,000-nat sums (1e-5 relative), and for bf16 within its rounding of
    # 15 logits near 120 (2^-9 relative: 0.25 nats each at most)
    if precision == "bf16" and not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bfloat16")
    model, posterior, x = _vae()
    with torch.no_grad():
        model.decoder[-1].bias[::2] = 120.0
    q = posterior(x)
    index = torch.arange(x.shape[0])
    fast = chunk_log_weights(model, q, x, 40, NoiseStream(2, index, 3, torch.float32, x.device), precision=precision)
    eps = NoiseStream(2, index, 3, torch.float32, x.device).read(40)
    reference = _reference_log_weights(copy.deepcopy(model).double(), copy.deepcopy(posterior).double()(x.double()), x.double(), eps.double())
    assert torch.isfinite(fast).all() and reference.max() < -500  # the big logits are in the sums
    atol = 1e-2 if precision == "fp32" else 15 * 0.25
    torch.testing.assert_close(fast.double(), reference, rtol=1e-5, atol=atol)


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(13, 200), (1, 200), (4, 7), (5, 64), (2, 150)])
def test_estimate_does_not_depend_on_batch_and_chunk_sizes(batch_size: int, chunk_size: int) -> None:
    # the same seed gives every point the same 200 samples whatever the split, so the estimates
    # differ only by the order of float32 additions in the running log-sum-exp
    model, posterior, x = _vae()
    reference = log_likelihood(model, posterior, x, k=200, seed=5, batch_size=13, chunk_size=200)
    ll = log_likelihood(model, posterior, x, k=200, seed=5, batch_size=batch_size, chunk_size=chunk_size)
    torch.testing.assert_close(ll.value, reference.value, rtol=0, atol=2e-5)
    torch.testing.assert_close(ll.stderr, reference.stderr, rtol=1e-4, atol=1e-6)
    upper = cubo_per_point(model, posterior, x, k=200, seed=5, batch_size=batch_size, chunk_size=chunk_size)
    ref_upper = cubo_per_point(model, posterior, x, k=200, seed=5, batch_size=13, chunk_size=200)
    torch.testing.assert_close(upper.value, ref_upper.value, rtol=0, atol=2e-5)


def test_memory_budgets_give_the_same_estimate() -> None:
    # budgets from one sample's working memory upwards: different (batch, chunk) pairs, same value
    model, posterior, x = _vae()
    row = row_bytes(model, torch.float32)
    reference = log_likelihood(model, posterior, x, k=300, seed=5)
    sizes = set()
    for rows in (1, 37, 300, 700, 100_000):  # the last capped at TARGET_ROWS
        budget = RESERVE_MIB + rows * row / 2**20
        sizes.add(chunk_sizes(model, 300, memory_budget=budget))
        ll = log_likelihood(model, posterior, x, k=300, seed=5, memory_budget=budget)
        torch.testing.assert_close(ll.value, reference.value, rtol=0, atol=2e-5)
    assert len(sizes) == 5


def test_chunk_sizes_follow_the_budget() -> None:
    model = VAEModel(784, 20, (400,))
    row = row_bytes(model, torch.float32)
    assert row == 4 * (2 * (400 + 784) + 784 + 6 * 20)
    # no budget: TARGET_ROWS in chunks of MIN_POINTS points (of all k samples where they fit)
    assert chunk_sizes(model, 5000) == (MIN_POINTS, TARGET_ROWS // MIN_POINTS)
    assert chunk_sizes(model, 20) == (TARGET_ROWS // 20, 20)
    # a budget: samples first (one point's noise and log weights at a time, the least memory)
    batch, chunk = chunk_sizes(model, 5000, memory_budget=3.0)
    assert batch == 1 and chunk == 2**20 // row and batch * chunk * row <= 2**20  # 3 MiB less the 2 MiB reserve
    assert chunk_sizes(model, 5000, memory_budget=6.0, workers=2) == (1, 2**20 // row)
    with pytest.raises(ConfigError, match="below one sample"):
        chunk_sizes(model, 5000, memory_budget=RESERVE_MIB + 0.001)
    assert chunk_sizes(model, 5000, memory_budget=MAX_BUDGET_MIB, workers=4096) == (1, TARGET_ROWS)
    # bf16: the rows are wider by the activations' copies, and the decoder's weights are copied
    # once (400 x 20 + 400 + 784 x 400 bfloat16 values), out of the budget of every worker
    copies = 2 * (400 * 20 + 400 + 784 * 400)
    assert decoder_copy_bytes(model, "bf16") == copies and decoder_copy_bytes(model) == 0
    wide = row_bytes(model, torch.float32, "bf16")
    assert chunk_sizes(model, 5000, memory_budget=6.0, workers=2, precision="bf16") == (1, (2**21 - copies) // (2 * wide))
    with pytest.raises(ConfigError, match="bfloat16 weights"):
        chunk_sizes(model, 5000, memory_budget=RESERVE_MIB + 0.5, precision="bf16")
    # a compiled decoder: larger chunks, k split equally (5000 = 4 x 1250; 300 = 1 x 300), and a
    # budget still binds them
    assert chunk_sizes(model, 5000, compile=True) == (MIN_POINTS, COMPILED_ROWS // MIN_POINTS)
    assert chunk_sizes(model, 300, compile=True) == (COMPILED_ROWS // 300, 300)
    batch, chunk = chunk_sizes(model, 5000, memory_budget=3.0, compile=True)
    assert batch == 1 and chunk == -(-5000 // -(-5000 // (2**20 // row))) and chunk * row <= 2**20
    for typo in (math.inf, 1e308, MAX_BUDGET_MIB * 2):  # 1e308 MiB in bytes overflows a float
        with pytest.raises(ConfigError, match="positive number of MiB up to 2\\^40"):
            chunk_sizes(model, 5000, memory_budget=typo)
    with pytest.raises(ConfigError, match="over the memory budget"):
        chunk_sizes(model, 5000, memory_budget=3.0, batch_size=10, chunk_size=500)
    assert row_bytes(model, torch.float32, "bf16") == row + 2 * (400 + 784)
    with pytest.raises(ConfigError, match="positive"):
        chunk_sizes(model, 5000, memory_budget=-1)


def test_shards_reproduce_the_whole_data_set(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # per-point seeds: points 0-16 and 17-49 evaluated apart give the values of one pass (a
    # per-datapoint posterior, indexed by the global point index, and the generic model path)
    family = make_family("full-rank", 2)
    posterior = LocalPosterior(50, family, initial=family.params_of(ppca.exact_posterior(ppca_x))).double()
    with torch.no_grad():
        posterior.table.add_(0.3 * torch.randn_like(posterior.table))
    whole = log_likelihood(ppca, posterior, ppca_x, k=120, seed=3, batch_size=8, chunk_size=50)
    parts = [log_likelihood(ppca, posterior, ppca_x, k=120, seed=3, points=r, batch_size=5) for r in (range(0, 17), range(17, 50))]
    torch.testing.assert_close(torch.cat([p.value for p in parts]), whole.value, rtol=0, atol=1e-12)
    assert log_likelihood(ppca, posterior, ppca_x, k=5, points=range(3, 3)).value.shape == (0,)
    with pytest.raises(ConfigError, match="contiguous range"):
        log_likelihood(ppca, posterior, ppca_x, k=5, points=range(0, 60))


def test_seed_none_follows_the_global_generator(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    posterior = LocalPosterior(50, make_family("mean-field", 2)).double()
    torch.manual_seed(11)
    first = log_likelihood(ppca, posterior, ppca_x, k=30).value
    torch.manual_seed(11)
    assert torch.equal(log_likelihood(ppca, posterior, ppca_x, k=30).value, first)
    assert not torch.equal(log_likelihood(ppca, posterior, ppca_x, k=30).value, first)


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bfloat16")
def test_bf16_decoder_keeps_log_weights_in_float32_and_close_to_fp32() -> None:
    # bf16 rounds the decoder's inputs, weights and logits to 8 significant bits (relative 2^-9);
    # a logit error e changes log p(x|z) by (x - sigmoid(l)) e, summed over D = 30 pixels with
    # logits of size ~1 here: errors of order 30 * 2^-9 ~ 0.06 nats at most per sample, and the
    # estimate (a log-mean-exp of 300 of them) moves by less than that.
    model, posterior, x = _vae(hidden=(64,))
    fp32 = log_likelihood(model, posterior, x, k=300, seed=2)
    bf16 = log_likelihood(model, posterior, x, k=300, seed=2, precision="bf16")
    assert bf16.value.dtype == torch.float32
    assert (bf16.value - fp32.value).abs().max() < 0.06
    assert not torch.equal(bf16.value, fp32.value)  # the decoder did run in bf16
    q = posterior(x)
    lw = chunk_log_weights(model, q, x, 10, NoiseStream(0, torch.arange(13), 3, torch.float32, x.device), precision="bf16")
    assert lw.dtype == torch.float32
    decoder = fast_decoder(model, "bf16")  # the weights cast once for every chunk: the same weights
    assert decoder is not None and decoder.output_weight.dtype == torch.bfloat16
    assert all(w.dtype == torch.bfloat16 for pair in decoder.weights for w in pair if w is not None)
    again = chunk_log_weights(model, q, x, 10, NoiseStream(0, torch.arange(13), 3, torch.float32, x.device),
                              precision="bf16", decoder=decoder)  # fmt: skip
    assert torch.equal(again, lw)
    with pytest.raises(ConfigError, match="precision"):
        log_likelihood(model, posterior, x, k=3, precision="fp16")


def test_worker_threads_change_nothing_in_the_estimate() -> None:
    # the points are split among 3 threads of one intra-op thread each; every point keeps its
    # noise stream, so the values are identical to one thread's, the progress counts every point
    # once, and the caller's thread setting is restored
    model, posterior, x = _vae()
    one = log_likelihood(model, posterior, x, k=150, seed=4, threads=1, batch_size=2)
    seen: list[int] = []
    torch.set_num_threads(2)
    try:
        three = log_likelihood(model, posterior, x, k=150, seed=4, threads=3, batch_size=2, on_batch=seen.append)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert torch.equal(three.value, one.value) and torch.equal(three.stderr, one.stderr)
    assert sum(seen) == 13
    with pytest.raises(ConfigError, match="threads"):
        log_likelihood(model, posterior, x, k=5, threads=0)


def test_compiled_decoder_gives_the_eager_log_weights(monkeypatch) -> None:
    # torch.compile fuses the decoder's layers, the softplus and the sums: on the same samples the
    # log weights equal the eager path's to float32 rounding of ~20-nat sums (1e-4), with a
    # logit of 120 (stable softplus) among them, also for fewer points than compiled (padded);
    # chunks of another sample count take the eager path; and log_likelihood's compiled estimate,
    # on two worker threads with every chunk compiled (the eager path made to fail; 13 points in
    # parts of 6 and 7, batches of 4: the last batch of each part is padded), equals the eager one
    model, posterior, x = _vae()
    with torch.no_grad():
        model.decoder[-1].bias[0] = 120.0
    index = torch.arange(x.shape[0])
    decoder = compiled_decoder(fast_decoder(model), x, (13, 40))
    assert decoder.compiled is not None and decoder.compiled_shape == (13, 40)
    for points, count in ((13, 40), (5, 40), (13, 25)):  # the compiled shape, fewer points (padded), other samples
        qb, xb, ib = posterior(x[:points]), x[:points], index[:points]
        eager = chunk_log_weights(model, qb, xb, count, NoiseStream(2, ib, 3, torch.float32, x.device))
        fused = chunk_log_weights(model, qb, xb, count, NoiseStream(2, ib, 3, torch.float32, x.device), decoder=decoder)
        assert fused.shape == (points, count) and torch.isfinite(fused).all()
        torch.testing.assert_close(fused, eager, rtol=0, atol=1e-4)
    reference = log_likelihood(model, posterior, x, k=5000, seed=5, threads=1)

    def eager(*args):
        raise AssertionError("a chunk took the eager path")

    monkeypatch.setattr(importance, "_fast_log_likelihood", eager)
    compiled = log_likelihood(model, posterior, x, k=5000, seed=5, threads=2, compile=True)
    torch.testing.assert_close(compiled.value, reference.value, rtol=0, atol=1e-4)


@pytest.mark.parametrize("dim", [784, 300, 50])
def test_log_product_sum_is_the_softplus_sum(dim: int) -> None:
    # sum_d softplus(l_d) = sum_d max(l_d, 0) + sum_groups log prod (1 + e^-|l_d|), groups of 112
    # factors (784 = 7 groups; 300 = 2 + a tail of 76; 50 = a tail alone), logits up to |l| = 120
    # where e^l overflows float32: within the worst-case float32 rounding bound of D terms,
    # 4 D u (1 + sum softplus) with u = 2^-24, of float64's softplus sum
    generator = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(6, 3, dim, generator=generator)
    logits[0, 0, :4] = torch.tensor([120.0, -120.0, 88.5, -88.5])
    reference = torch.nn.functional.softplus(logits.double()).sum(-1)
    got = logits.clamp_min(0).sum(-1) + importance._log_product_sum(logits)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    bound = 4 * dim * 2.0**-24 * (1 + reference)
    assert ((got.double() - reference).abs() <= bound).all()
