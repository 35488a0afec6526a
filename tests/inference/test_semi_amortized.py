"""Semi-amortized (SA-VAE) and iterative amortized posteriors: K = 0 is plain amortized VI,
refinement raises the ELBO, its gradient matches finite differences (or is straight-through
when stopped), and the iterative posterior trains."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.errors import ConfigError
from avi.families import make_family
from avi.inference import fit
from avi.inference.semi_amortized import IterativePosterior, SemiAmortizedPosterior
from avi.models import LatentVariableModel, LinearGaussian, VAEModel
from avi.nn import mlp
from avi.objectives import elbo
from tests.closed_forms import linear_gaussian_elbo

FAMILY = make_family("mean-field", 2)


def _vae() -> tuple[VAEModel, Tensor]:
    """A small float64 Bernoulli VAE (D = 6, K = 2, tanh: smooth for finite differences) and
    40 binary points."""
    model = VAEModel(6, 2, hidden=(8,), activation="tanh").double()
    x = torch.bernoulli(
        torch.full((40, 6), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(5)
    )
    return model, x


def _loss_and_grads(
    model: LatentVariableModel, posterior: nn.Module, x: Tensor
) -> tuple[Tensor, list[Tensor]]:
    torch.manual_seed(11)
    loss = -elbo(model, posterior(x), x, num_samples=3, analytic_kl=True).mean()
    params = [*posterior.parameters(), *model.parameters()]
    return loss, list(torch.autograd.grad(loss, params))


@pytest.mark.parametrize("backprop", [True, False])
def test_zero_steps_is_plain_amortized_vi(backprop: bool) -> None:
    model, x = _vae()
    encoder = mlp_encoder(6, (8,), FAMILY.param_size).double()
    plain_loss, plain_grads = _loss_and_grads(model, AmortizedPosterior(encoder, FAMILY), x)
    sa = SemiAmortizedPosterior(encoder, FAMILY, model, steps=0, backprop=backprop)
    sa_loss, sa_grads = _loss_and_grads(model, sa, x)
    # same seed, same draws: equal up to the rounding of params.detach() + initial - initial.detach()
    torch.testing.assert_close(sa_loss, plain_loss, rtol=0, atol=1e-12)
    # the encoder's and the decoder's weights and biases
    assert len(sa_grads) == len(plain_grads) == 2 * 2 + 2 * 2
    for a, b in zip(sa_grads, plain_grads):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.statistical
@pytest.mark.parametrize("kind", ["ppca", "vae"])
def test_refinement_with_a_small_step_raises_the_mean_elbo(
    kind: str, ppca: LinearGaussian, ppca_x: Tensor
) -> None:
    # K = 5 steps of size 0.01 on single-sample ELBO gradients from an untrained encoder's
    # proposal. Per point i we compare d_i = ELBO(refined q_i) - ELBO(q_i) on the same encoder
    # weights: exactly for PPCA (closed-form ELBO), and for the VAE with 2,000 samples drawn
    # with common random numbers (both q are mean-field Gaussians: the same eps gives
    # z = m + s * eps for each, and the KL is analytic), so that d_i carries little Monte Carlo
    # noise. The test is one-sided on the mean over the N points: mean(d) must exceed
    # 3 SE = 3 sd(d) / sqrt(N) (false alarm 0.13% were the true mean 0); measured t-statistics
    # are about 6 (PPCA, N = 50) and 13 (VAE, N = 40). "Small" matters: at step 0.05 the PPCA
    # posterior's curvature makes plain gradient ascent overshoot at 18 of the 50 points.
    model, x = (ppca, ppca_x) if kind == "ppca" else _vae()
    model.requires_grad_(False)
    encoder = mlp_encoder(model.data_dim, (), FAMILY.param_size).double()
    posterior = SemiAmortizedPosterior(encoder, FAMILY, model, steps=5, lr=0.01)
    with torch.no_grad():
        refined, proposed = posterior(x), FAMILY(encoder(x))
        if kind == "ppca":
            d = linear_gaussian_elbo(model, refined, x) - linear_gaussian_elbo(model, proposed, x)
        else:
            values = []
            for q in (refined, proposed):
                torch.manual_seed(3)
                values.append(elbo(model, q, x, num_samples=2000, analytic_kl=True))
            d = values[0] - values[1]
    standard_error = d.std() / math.sqrt(d.numel())
    assert d.mean() > 3 * standard_error, (d.mean(), standard_error)


def _refined_elbo(
    posterior: SemiAmortizedPosterior, x: Tensor
) -> Callable[[Tensor, Tensor], Tensor]:
    """ELBO of the refined q as a function of the (linear) encoder's weight and bias, with the
    noise of every refinement step and of the final estimate fixed by reseeding."""

    def f(weight: Tensor, bias: Tensor) -> Tensor:
        torch.manual_seed(7)
        q = functional_call(posterior, {"encoder.0.weight": weight, "encoder.0.bias": bias}, (x,))
        return elbo(posterior.model, q, x, analytic_kl=True)

    return f


def _encoder_weights(encoder: nn.Module) -> tuple[Tensor, Tensor]:
    return tuple(
        p.detach().clone().requires_grad_(True) for p in (encoder[0].weight, encoder[0].bias)
    )


def test_gradient_through_the_refinement_matches_finite_differences() -> None:
    # float64, fixed noise: the K = 3 steps are a smooth function of the encoder's weights, and
    # backprop=True differentiates through them (second-order terms included). The same
    # check fails for the straight-through gradient of backprop=False, so it is discriminating.
    model, x = _vae()
    model.requires_grad_(False)
    x = x[:3]
    encoder = mlp_encoder(6, (), FAMILY.param_size).double()
    weights = _encoder_weights(encoder)
    exact = SemiAmortizedPosterior(encoder, FAMILY, model, steps=3, lr=0.3, backprop=True)
    assert torch.autograd.gradcheck(
        _refined_elbo(exact, x), weights, eps=1e-6, atol=1e-6, rtol=1e-5
    )
    stopped = SemiAmortizedPosterior(encoder, FAMILY, model, steps=3, lr=0.3, backprop=False)
    assert not torch.autograd.gradcheck(
        _refined_elbo(stopped, x), weights, eps=1e-6, atol=1e-6, rtol=1e-5, raise_exception=False
    )


def _gradient_at_refined(
    model: LatentVariableModel, posterior: SemiAmortizedPosterior, x: Tensor, weights: list[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The refined point (seed 7) and the gradient of the summed ELBO there w.r.t. ``weights``;
    the global RNG is left where that ELBO's draw began, so the caller redraws the same noise."""
    torch.manual_seed(7)
    params = posterior.params(x)
    rng = torch.get_rng_state()
    got = torch.autograd.grad(elbo(model, FAMILY(params), x, analytic_kl=True).sum(), weights)
    torch.set_rng_state(rng)
    return params, got


def test_stopped_refinement_gives_the_straight_through_gradient() -> None:
    # backprop=False: the same refined point lambda_K as backprop=True, and the encoder receives
    # dL/dlambda_K as if lambda_K = lambda_0 (identity Jacobian), i.e. the vector-Jacobian
    # product of the encoder with dL/dlambda_K.
    model, x = _vae()
    model.requires_grad_(False)
    encoder = mlp_encoder(6, (8,), FAMILY.param_size).double()
    posterior = SemiAmortizedPosterior(encoder, FAMILY, model, steps=4, lr=0.2, backprop=False)
    weights = list(encoder.parameters())

    params, got = _gradient_at_refined(model, posterior, x, weights)
    refined = params.detach().requires_grad_(True)
    (d_refined,) = torch.autograd.grad(
        elbo(model, FAMILY(refined), x, analytic_kl=True).sum(), [refined]
    )
    expected = torch.autograd.grad(encoder(x), weights, grad_outputs=d_refined)
    for a, b in zip(got, expected):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)

    torch.manual_seed(7)
    full = SemiAmortizedPosterior(encoder, FAMILY, model, steps=4, lr=0.2, backprop=True).params(x)
    torch.testing.assert_close(full, params, rtol=0, atol=1e-12)  # the forward values agree


def test_refinement_under_no_grad_builds_no_graph() -> None:
    # evaluation (no_grad) takes the same K steps without a second-order graph to keep
    model, x = _vae()
    posterior = SemiAmortizedPosterior(
        mlp_encoder(6, (8,), FAMILY.param_size).double(), FAMILY, model, steps=3
    )
    torch.manual_seed(7)
    trained = posterior.params(x)
    torch.manual_seed(7)
    with torch.no_grad():
        evaluated = posterior.params(x)
    assert trained.requires_grad and not evaluated.requires_grad
    torch.testing.assert_close(evaluated, trained.detach(), rtol=0, atol=1e-12)


def test_iterative_posterior_gives_every_parameter_a_gradient() -> None:
    model, x = _vae()
    update = mlp([2 * FAMILY.param_size, 8, 2 * FAMILY.param_size], "tanh").double()
    posterior = IterativePosterior(update, FAMILY, model, iterations=3).double()
    loss = -elbo(model, posterior(x), x, analytic_kl=True).mean()
    loss.backward()
    names = [name for name, _ in posterior.named_parameters()]
    assert "initial" in names and len(names) == 5  # lambda_0, two weights and two biases
    for name, p in [*posterior.named_parameters(), *model.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_iterative_posterior_learns_on_a_fixed_ppca(ppca: LinearGaussian, ppca_x: Tensor) -> None:
    # 300 Adam steps (full batch, lr 0.01) on the ELBO with the model fixed. The ELBOs compared
    # are closed forms of the returned q, so the only randomness is in training (seeded). The
    # mean rises from -30.3 to -13.0 (measured) against log p(x) = -7.65 (the best mean-field
    # value is -8.34); we ask for half of the distance to log p(x) to be closed.
    update = mlp([2 * FAMILY.param_size, 16, 2 * FAMILY.param_size], "tanh").double()
    posterior = IterativePosterior(update, FAMILY, ppca, iterations=3).double()

    def mean_elbo() -> float:
        with torch.no_grad():
            return linear_gaussian_elbo(ppca, posterior(ppca_x), ppca_x).mean().item()

    before = mean_elbo()
    fit(ppca, posterior, Dataset(ppca_x), epochs=300, batch_size=50, lr=0.01, train_model=False)
    after = mean_elbo()
    best = ppca.exact_log_marginal(ppca_x).mean().item()
    assert after - before > 0.5 * (best - before), (before, after, best)


def test_bad_settings_are_config_errors(ppca: LinearGaussian) -> None:
    encoder = mlp_encoder(5, (), FAMILY.param_size)
    with pytest.raises(ConfigError, match="non-negative"):
        SemiAmortizedPosterior(encoder, FAMILY, ppca, steps=-1)
    for lr in (0.0, -0.1):
        with pytest.raises(ConfigError, match="step size must be positive"):
            SemiAmortizedPosterior(encoder, FAMILY, ppca, lr=lr)
    with pytest.raises(ConfigError, match="at least 1"):
        IterativePosterior(mlp([8, 8]), FAMILY, ppca, iterations=0)


@pytest.mark.parametrize("backprop", [True, False])
def test_the_model_gets_the_partial_derivative_at_the_refined_point(backprop: bool) -> None:
    # Kim et al. (2018), Algorithm 1: theta is updated with d ELBO(lambda_K, theta) / d theta at
    # the refined lambda_K held fixed; only the encoder is differentiated through the steps.
    model, x = _vae()
    encoder = mlp_encoder(6, (8,), FAMILY.param_size).double()
    posterior = SemiAmortizedPosterior(encoder, FAMILY, model, steps=3, lr=0.3, backprop=backprop)
    weights = list(model.parameters())
    params, got = _gradient_at_refined(model, posterior, x, weights)
    expected = torch.autograd.grad(elbo(model, FAMILY(params.detach()), x, analytic_kl=True).sum(), weights)
    for a, b in zip(got, expected):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
