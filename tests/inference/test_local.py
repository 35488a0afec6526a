"""Per-datapoint posteriors: lookup by index, sparse updates, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from avi.data import Dataset, shard_batches
from avi.errors import AviError
from avi.families import make_family
from avi.inference import Hook, LocalPosterior, StepInfo, TrainState, make_optimizers, train_epoch
from avi.models import LinearGaussian
from avi.objectives import ELBO


def test_default_table_is_the_family_initial_params() -> None:
    family = make_family("full-rank", 3)
    local = LocalPosterior(10, family, init_scale=0.5)
    assert local.n_points == 10 and local.table.shape == (10, family.param_size)
    torch.testing.assert_close(local.table.detach(), family.initial_params(10, 0.5))


def test_forward_looks_up_the_rows_of_the_index() -> None:
    family = make_family("mean-field", 2)
    initial = torch.randn(6, family.param_size)
    local = LocalPosterior(6, family, initial=initial)
    index = torch.tensor([4, 0, 4])
    q = local(torch.zeros(3, 5), index)
    torch.testing.assert_close(family.params_of(q), initial[index])
    # the table is a copy: changing the caller's tensor does not change the posterior
    initial.zero_()
    assert local.table.abs().sum() > 0


def test_without_index_is_a_clear_error() -> None:
    local = LocalPosterior(4, make_family("mean-field", 2))
    with pytest.raises(AviError, match="data-point indices"):
        local(torch.zeros(4, 3))


def test_wrong_initial_shape_is_an_error() -> None:
    family = make_family("full-rank", 2)
    with pytest.raises(AviError, match=r"shape \(4, 5\)"):
        LocalPosterior(4, family, initial=torch.zeros(4, 4))
    with pytest.raises(AviError, match=r"shape \(4, 5\)"):
        LocalPosterior(4, family, initial=torch.zeros(3, 5))


def test_gradient_is_sparse_on_the_batch_rows(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    family = make_family("full-rank", 2)
    local = LocalPosterior(50, family).double()
    index = torch.tensor([3, 7, 11])
    ELBO()(ppca, local(ppca_x[index], index), ppca_x[index]).value.sum().backward()
    grad = local.table.grad
    assert grad.is_sparse
    dense = grad.to_dense()
    assert (dense[index].abs().sum(1) > 0).all()
    mask = torch.ones(50, dtype=torch.bool)
    mask[index] = False
    assert (dense[mask] == 0).all()


def test_sparse_adam_moves_only_the_rows_of_each_batch(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # Step 1 fills Adam's moments for batch 1. At step 2 a dense Adam would keep moving batch
    # 1's rows on that momentum; SparseAdam must move exactly the rows of batch 2.
    family = make_family("mean-field", 2)
    local = LocalPosterior(50, family).double()
    optimizers = make_optimizers(ppca, local, local_lr=0.1, train_model=False)
    assert [type(o).__name__ for o in optimizers] == ["SparseAdam"]
    snapshots = [local.table.detach().clone()]

    class Snapshot(Hook):
        def on_step(self, state: TrainState, info: StepInfo) -> None:
            snapshots.append(local.table.detach().clone())

    state = TrainState(ppca, local, optimizers, torch.Generator().manual_seed(5))
    train_epoch(state, Dataset(ppca_x), ELBO(), batch_size=10, hooks=[Snapshot()])
    batches = list(shard_batches(50, 10, torch.Generator().manual_seed(5)))
    assert len(snapshots) == 1 + len(batches) == 6
    for before, after, batch in zip(snapshots[:-1], snapshots[1:], batches, strict=True):
        moved = (after != before).any(1).nonzero().flatten()
        assert moved.sort().values.tolist() == sorted(batch.tolist())
