"""Semi-amortized and iterative amortized posteriors: an encoder's proposal refined per point.

Both hold a reference to the model (not a submodule: the model's parameters stay the model's),
because refinement follows the gradient of the ELBO, which needs p(x, z).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.func import functional_call

from avi.errors import ConfigError
from avi.families import Family
from avi.families.posterior import Posterior
from avi.models.base import LatentVariableModel
from avi.objectives.bounds import elbo

__all__ = ["IterativePosterior", "SemiAmortizedPosterior", "elbo_gradient"]


class _SummedElbo(nn.Module):
    """sum_i ELBO(x_i; family(lambda_i)) as the forward of a module holding the model, so that
    :func:`torch.func.functional_call` can evaluate it at other (detached) model parameters."""

    family: Family

    def __init__(self, model: LatentVariableModel, family: Family) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "family", family)

    def forward(self, params: Tensor, x: Tensor) -> Tensor:
        return elbo(self.model, self.family(params), x, analytic_kl=True).sum()


def elbo_gradient(
    model: LatentVariableModel, family: Family, params: Tensor, x: Tensor, *, create_graph: bool
) -> Tensor:
    """d/d lambda of sum_i ELBO(x_i; family(lambda_i)), one reparameterised sample per point,
    analytic KL where torch has it: (B, P). ``create_graph`` keeps it differentiable in lambda
    only: the model's parameters enter as constants, so no gradient reaches them through it."""
    if not params.requires_grad:
        params = params.requires_grad_(True)
    fixed = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    value = functional_call(_SummedElbo(model, family), fixed, (params, x))
    (grad,) = torch.autograd.grad(value, [params], create_graph=create_graph)
    return grad


class _Refining(Posterior):
    family: Family
    model: LatentVariableModel

    def __init__(self, model: LatentVariableModel, family: Family) -> None:
        super().__init__()
        self.family = family
        object.__setattr__(self, "model", model)  # referenced, not owned: no parameter duplication

    def forward(self, x: Tensor, index: Tensor | None = None) -> Distribution:
        return self.family(self.params(x, index))

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class SemiAmortizedPosterior(_Refining):
    """SA-VAE (Kim, Wiseman, Miller, Sontag and Rush 2018): lambda_0 = encoder(x), then
    lambda_{t+1} = lambda_t + lr * grad ELBO(lambda_t) for t < K.

    With ``backprop=True`` training differentiates through the K steps into the encoder
    (second-order terms included); the model gets the partial derivative of ELBO(lambda_K) at
    the refined lambda_K, none through the steps (Kim et al.'s Algorithm 1). With
    ``backprop=False`` the refinement is a stopped gradient: the steps are taken on detached
    values and the encoder receives the refined point's gradient as if the refinement were the
    identity (straight-through), so the encoder learns to propose where refinement ends up, at
    first-order cost. ``K=0`` is plain amortized VI.
    """

    def __init__(
        self,
        encoder: nn.Module,
        family: Family,
        model: LatentVariableModel,
        *,
        steps: int = 10,
        lr: float = 1.0,
        backprop: bool = True,
    ) -> None:
        super().__init__(model, family)
        if steps < 0:
            raise ConfigError(f"refinement steps K must be non-negative, got {steps}")
        if lr <= 0:
            raise ConfigError(f"refinement step size must be positive, got {lr}")
        self.encoder, self.steps, self.lr, self.backprop = encoder, steps, lr, backprop

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        initial = self.encoder(x)
        # decided outside enable_grad: under no_grad (evaluation) no second-order graph is built
        differentiable = self.backprop and torch.is_grad_enabled()
        with torch.enable_grad():
            params = initial if differentiable else initial.detach()
            for _ in range(self.steps):
                grad = elbo_gradient(self.model, self.family, params, x, create_graph=differentiable)
                params = params + self.lr * grad
        if differentiable:
            return params
        return params.detach() + initial - initial.detach()


class IterativePosterior(_Refining):
    """Iterative amortized inference (Marino, Yue and Mandt 2018): a learned update network
    maps (lambda_t, grad ELBO(lambda_t)) to a proposal delta and a gate g in (0, 1), and
    lambda_{t+1} = g * lambda_t + (1 - g) * delta, for T iterations from a learned lambda_0.

    The gradients are inputs (detached, no second-order terms); training backpropagates the
    final ELBO through the T updates into the update network.
    """

    def __init__(
        self,
        update: nn.Module,
        family: Family,
        model: LatentVariableModel,
        *,
        iterations: int = 5,
    ) -> None:
        super().__init__(model, family)
        if iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {iterations}")
        self.update, self.iterations = update, iterations
        self.initial = nn.Parameter(family.initial_params(1))

    def params(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        params = self.initial.expand(x.shape[0], -1)
        for _ in range(self.iterations):
            with torch.enable_grad():
                grad = elbo_gradient(self.model, self.family, params.detach(), x, create_graph=False)
            # gradients of a VAE's ELBO span orders of magnitude: scale them per point
            grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-6)
            delta, gate = self.update(torch.cat([params, grad], dim=-1)).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            params = gate * params + (1 - gate) * delta
        return params
