"""Datasets, binarisation and the per-rank sharding of batches."""

from __future__ import annotations

import pytest
import torch

from avi.data import Dataset, batch_sizes, bernoulli_draw, shard_batches
from avi.data.dataset import bernoulli_threshold
from avi.errors import ConfigError, DataError


def test_static_dataset_batches_are_the_rows() -> None:
    data = Dataset(torch.arange(12.0).reshape(6, 2), labels=torch.arange(6))
    assert len(data) == 6 and data.dim == 2
    index = torch.tensor([4, 1])
    torch.testing.assert_close(data.batch(index), data.x[index])
    sub = data.subset(index)
    torch.testing.assert_close(sub.x, data.x[index])
    torch.testing.assert_close(sub.labels, torch.tensor([4, 1]))
    assert data.binarized(0) is data


@pytest.mark.statistical
def test_dynamic_binarisation_draws_fresh_bernoulli_batches() -> None:
    p = torch.tensor([[0.0, 1.0, 0.5, 0.5]]).expand(2000, 4).contiguous()
    data = Dataset(p, dynamic=True)
    index = torch.arange(2000)
    a = data.batch(index, torch.Generator().manual_seed(0))
    b = data.batch(index, torch.Generator().manual_seed(1))
    assert ((a == 0) | (a == 1)).all()
    assert (a[:, 0] == 0).all() and (a[:, 1] == 1).all()
    assert not torch.equal(a, b)  # a fresh draw each time
    # mean of 2000 Bernoulli(1/2): standard error 0.5 / sqrt(2000) = 0.011; allow 4 of them
    assert (a[:, 2:].mean(0) - 0.5).abs().max() < 0.045


@pytest.mark.statistical
def test_bernoulli_draw_matches_every_mnist_intensity() -> None:
    """P(x = 1) = round(2^16 p) / 2^16 for p = k / 255, k = 0..255, 4,000 draws each."""
    n = 4000
    p = (torch.arange(256.0) / 255).expand(n, 256).contiguous()
    x = bernoulli_draw(p.clone(), torch.Generator().manual_seed(0))
    assert x.dtype == p.dtype and ((x == 0) | (x == 1)).all()
    assert (x[:, 0] == 0).all() and (x[:, -1] == 1).all()
    exact = torch.round(p[0] * 2**16) / 2**16
    assert (exact - p[0]).abs().max() <= 2**-17
    z = (x.mean(0) - exact) / (exact * (1 - exact) / n).sqrt().clamp_min(1e-12)
    # 254 z-scores: |z| > 4.5 has probability 1.7e-3 among them under the claimed distribution
    assert z[1:-1].abs().max() < 4.5
    assert abs(z[1:-1].mean()) < 4 / 254**0.5  # no shared bias across intensities


def test_bernoulli_threshold_counts_the_nearest_multiple_of_2_to_the_minus_16() -> None:
    """Over all 2^16 values of u, #{u < threshold(p)} = ceil(2^16 p - 1/2): exactly, for every
    MNIST intensity k / 255, for p = 0 and 1, and next to the halves where rounding flips."""
    u = torch.arange(-(2**15), 2**15, dtype=torch.int16)
    p = torch.cat([torch.arange(256.0) / 255, (torch.arange(1.0, 100.0) * 655 + 0.5 + 0.01) / 2**16,
                   (torch.arange(1.0, 100.0) * 655 + 0.5 - 0.01) / 2**16])
    counts = (u[None, :] < bernoulli_threshold(p.clone())[:, None]).sum(1)
    expected = torch.ceil(p.double() * 2**16 - 0.5).long()
    assert torch.equal(counts, expected)
    assert (expected.double() / 2**16 - p.double()).abs().max() <= 2**-17


def test_batches_leave_the_data_untouched() -> None:
    p = torch.rand(50, 6, generator=torch.Generator().manual_seed(0))
    data = Dataset(p.clone(), dynamic=True)
    data.batch(torch.arange(50), torch.Generator().manual_seed(1))
    assert torch.equal(data.x, p)


def test_bernoulli_draw_takes_half_precision_and_rejects_integers() -> None:
    half = bernoulli_draw(torch.full((4, 5), 1.0, dtype=torch.bfloat16), torch.Generator().manual_seed(0))
    assert half.dtype == torch.bfloat16 and (half == 1).all()
    with pytest.raises(DataError, match="floating point"):
        bernoulli_draw(torch.ones(3, dtype=torch.int64))


def test_bernoulli_draw_is_reproducible_from_its_generator() -> None:
    p = torch.full((7, 13), 0.3)  # 91 values: not a multiple of the 4 draws per random word
    a = bernoulli_draw(p.clone(), torch.Generator().manual_seed(5))
    b = bernoulli_draw(p.clone(), torch.Generator().manual_seed(5))
    assert a.shape == p.shape and torch.equal(a, b)


def test_static_binarisation_is_a_fixed_draw() -> None:
    data = Dataset(torch.full((50, 3), 0.5), dynamic=True)
    a, b = data.binarized(3), data.binarized(3)
    assert not a.dynamic and torch.equal(a.x, b.x)
    assert ((a.x == 0) | (a.x == 1)).all()
    assert not torch.equal(a.x, data.binarized(4).x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_static_binarisation_of_gpu_data_is_the_cpu_draw() -> None:
    data = Dataset(torch.rand(50, 3, generator=torch.Generator().manual_seed(0)), dynamic=True)
    on_gpu = data.to("cuda").binarized(3)
    assert on_gpu.x.is_cuda and torch.equal(on_gpu.x.cpu(), data.binarized(3).x)


def test_one_process_sees_every_point_once_per_epoch(generator: torch.Generator) -> None:
    batches = list(shard_batches(103, 10, generator))
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert torch.cat(batches).sort().values.tolist() == list(range(103))
    unshuffled = torch.cat(list(shard_batches(7, 3, torch.Generator(), shuffle=False)))
    assert unshuffled.tolist() == list(range(7))


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_shards_together_are_the_single_process_batch(world_size: int) -> None:
    n, batch_size = 107, 20  # a last batch of 7, at least one point per rank
    single = list(shard_batches(n, batch_size, torch.Generator().manual_seed(7)))
    shards = [
        list(
            shard_batches(
                n, batch_size, torch.Generator().manual_seed(7), rank=rank, world_size=world_size
            )
        )
        for rank in range(world_size)
    ]
    assert all(len(s) == len(single) for s in shards)
    for step, batch in enumerate(single):
        parts = [s[step] for s in shards]
        together = torch.cat(parts)
        assert (
            together.sort().values.tolist() == batch.sort().values.tolist()
        )  # same points, no repeats
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


@pytest.mark.parametrize(("n", "world_size"), [(81, 4), (83, 4), (2, 4)])
def test_a_last_batch_shorter_than_the_world_is_padded_to_one_point_per_rank(n: int, world_size: int) -> None:
    """The last batch of 1 or 3 points (or 2 points in all) on 4 ranks: each rank gets one
    point, the batch's own points followed by the epoch's first ones, cycled."""
    single = list(shard_batches(n, 20, torch.Generator().manual_seed(7)))
    order = torch.cat(single)
    shards = [list(shard_batches(n, 20, torch.Generator().manual_seed(7), rank=r, world_size=world_size)) for r in range(world_size)]
    last = [s[-1] for s in shards]
    assert all(len(part) == 1 for part in last)
    short = single[-1].tolist()
    padding = [order[i % n].item() for i in range(world_size - len(short))]
    assert [part.item() for part in last] == short + padding


@pytest.mark.parametrize(("n", "world_size"), [(107, 1), (107, 4), (81, 4), (2, 4), (40, 2)])
def test_batch_sizes_are_the_ranks_shards_together(n: int, world_size: int) -> None:
    """The global batch sizes that training scales its loss by are those the shards add up to."""
    shards = [list(shard_batches(n, 20, torch.Generator().manual_seed(7), rank=r, world_size=world_size)) for r in range(world_size)]
    assert batch_sizes(n, 20, world_size) == [sum(len(s[step]) for s in shards) for step in range(len(shards[0]))]


@pytest.mark.parametrize(
    ("batch_size", "world_size", "message"),
    [(0, 1, "positive"), (-5, 1, "positive"), (10, 3, "divisible")],
)
def test_bad_batch_size_is_a_config_error(batch_size: int, world_size: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        next(shard_batches(10, batch_size, torch.Generator(), world_size=world_size))
