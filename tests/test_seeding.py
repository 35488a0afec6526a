import pytest
import torch

from avi.seeding import seeded


def test_seeded_draws_depend_on_the_seed_only():
    torch.manual_seed(1)
    with seeded(5):
        a = torch.randn(4)
    torch.randn(100)  # a different global state before the block
    with seeded(5):
        b = torch.randn(4)
    with seeded(6):
        c = torch.randn(4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_seeded_restores_the_global_generator():
    torch.manual_seed(3)
    expected = torch.randn(8)
    torch.manual_seed(3)
    with seeded(5):
        torch.randn(1000)
    assert torch.equal(torch.randn(8), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_seeded_seeds_and_restores_the_cuda_generator():
    device = torch.device("cuda")
    torch.cuda.manual_seed(3)
    expected = torch.randn(8, device=device)
    torch.cuda.manual_seed(3)
    with seeded(5, device):
        inside = torch.randn(4, device=device)
    assert torch.equal(torch.randn(8, device=device), expected)
    with seeded(5, device):
        assert torch.equal(torch.randn(4, device=device), inside)
