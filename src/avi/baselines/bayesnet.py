"""Discrete Bayesian networks: exact posteriors (enumeration, and through pgmpy variable
elimination and the junction tree) and mean-field variational inference on the same network.

A network is p(z) = prod_v p(z_v | z_parents(v)) over discrete variables, each conditional a
table (CPT). With evidence e on some variables, the posterior over the others is exact by

- ``"enumeration"``: avi's :func:`~avi.baselines.enumeration.enumerate_posterior` over every
  configuration of the free variables (small networks only);
- ``"variable-elimination"``: pgmpy's ``VariableElimination`` (Zhang and Poole 1994), one
  query per free variable;
- ``"junction-tree"``: pgmpy's ``BeliefPropagation``, message passing on a junction tree
  (Lauritzen and Spiegelhalter 1988) built here by min-fill triangulation, calibrated once.

The last two give each free variable's marginal p(z_v | e) and never the joint table: they
reduce the CPTs by the evidence and solve each connected component of the free variables on
its own, as p(z | e) factorises over them.

:func:`mean_field` fits q(z) = prod_v q_v(z_v) by coordinate ascent (CAVI; Bishop, PRML 10.1.1):
log q_v(k) = sum over the CPTs f that contain v of E_{q_-v}[log f | z_v = k] + const, each sweep
raising the ELBO sum_f E_q[log f] + sum_v H(q_v) <= log p(e).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

from avi.baselines.conjugate import sample_dirichlet
from avi.baselines.enumeration import CategoricalTable, enumerate_posterior
from avi.baselines.targets import check_count
from avi.errors import AviError, ConfigError

__all__ = [
    "EXACT_METHODS",
    "DiscreteBayesNet",
    "MeanFieldCategorical",
    "ProductCategorical",
    "mean_field",
    "network_posterior",
]

EXACT_METHODS = ("enumeration", "variable-elimination", "junction-tree")
#: variable elimination and the junction tree refuse a network that needs a larger table (512 MiB)
MAX_CLIQUE = 2**26
#: log-probabilities of impossible entries are floored here so that 0 * log 0 = 0 in CAVI
_LOG_FLOOR = -1e3


class DiscreteBayesNet:
    """A discrete Bayesian network from its conditional probability tables.

    ``cpds[v] = (parents, table)`` with ``table`` of shape (c_parent_1, ..., c_parent_m, c_v),
    each row a distribution over v's states; ``states[v]`` names v's states (default "0", "1",
    ...). The graph must be acyclic; :attr:`names` lists the variables in topological order.
    """

    def __init__(
        self, cpds: Mapping[str, tuple[Sequence[str], Tensor]], states: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.parents = {v: tuple(p) for v, (p, _) in cpds.items()}
        for v, parents in self.parents.items():
            missing = [p for p in parents if p not in self.parents]
            if missing:
                raise ConfigError(f"variable {v!r} has parents {missing} that are not in the network")
        self.names = _topological_order(self.parents)
        self.tables = {v: torch.as_tensor(t, dtype=torch.float64) for v, (_, t) in cpds.items()}
        self.cards = {v: self.tables[v].shape[-1] for v in self.names}
        for v in self.names:
            _check_table(v, self.tables[v], tuple(self.cards[p] for p in self.parents[v]) + (self.cards[v],))
        states = states or {}
        self.states = {v: tuple(states.get(v, [str(k) for k in range(self.cards[v])])) for v in self.names}

    @classmethod
    def from_pgmpy(cls, model: Any) -> DiscreteBayesNet:
        """Convert a pgmpy ``DiscreteBayesianNetwork`` (its CPDs and state names)."""
        cpds, states = {}, {}
        for cpd in model.get_cpds():
            v, parents = cpd.variables[0], cpd.variables[1:]
            cards = [int(c) for c in cpd.cardinality]
            # pgmpy's values: (c_v, prod of parent cards), the last parent varying fastest
            table = torch.as_tensor(cpd.get_values(), dtype=torch.float64).T.reshape(*cards[1:], cards[0])
            cpds[v] = (parents, table)
            states[v] = [str(s) for s in cpd.state_names[v]]
        return cls(cpds, states)

    def to_pgmpy(self) -> Any:
        """The same network as a pgmpy ``DiscreteBayesianNetwork``."""
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.models import DiscreteBayesianNetwork

        model = DiscreteBayesianNetwork([(p, v) for v in self.names for p in self.parents[v]])
        model.add_nodes_from(self.names)
        for v in self.names:
            parents = list(self.parents[v])
            model.add_cpds(
                TabularCPD(
                    v, self.cards[v], self.tables[v].reshape(-1, self.cards[v]).T.numpy(),
                    evidence=parents or None, evidence_card=[self.cards[p] for p in parents] or None,
                    state_names={u: list(self.states[u]) for u in [v, *parents]},
                )
            )  # fmt: skip
        model.check_model()
        return model

    def state_index(self, variable: str, state: str | int) -> int:
        """The code of ``state`` (a state name or an integer code) of ``variable``."""
        if variable not in self.cards:
            raise ConfigError(f"unknown variable {variable!r}; the network has {list(self.names)}")
        if isinstance(state, int) and 0 <= state < self.cards[variable]:
            return state
        if str(state) in self.states[variable]:
            return self.states[variable].index(str(state))
        raise ConfigError(f"unknown state {state!r} of {variable!r}; choose from {list(self.states[variable])}")

    def log_joint(self, z: Tensor) -> Tensor:
        """log p(z) for codes z: (..., n) in the order of :attr:`names`."""
        column = {v: i for i, v in enumerate(self.names)}
        total = torch.zeros(z.shape[:-1], dtype=torch.float64)
        for v in self.names:
            index = tuple(z[..., column[u]] for u in (*self.parents[v], v))
            total = total + self.tables[v].log()[index]
        return total

    def factors(self, evidence: Mapping[str, int]) -> list[tuple[tuple[str, ...], Tensor]]:
        """Every CPT as (free variables, log table) with the evidence variables fixed."""
        out = []
        for v in self.names:
            scope = (*self.parents[v], v)
            index = tuple(evidence[u] if u in evidence else slice(None) for u in scope)
            out.append((tuple(u for u in scope if u not in evidence), self.tables[v].log()[index]))
        return out


def _check_table(variable: str, table: Tensor, shape: tuple[int, ...]) -> None:
    """Raise :class:`ConfigError` unless the CPT of ``variable`` has ``shape`` (parents' states,
    then its own) and each row is a distribution over the variable's states."""
    if tuple(table.shape) != shape:
        raise ConfigError(
            f"the table of {variable!r} has shape {tuple(table.shape)}, expected {shape} (parents, then {variable!r})"
        )
    sums_to_one = torch.allclose(table.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6, rtol=0)
    if (table < 0).any() or not sums_to_one:
        raise ConfigError(f"the table of {variable!r} must hold probabilities summing to 1 over {variable!r}'s states")


def _topological_order(parents: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Kahn's algorithm; a cycle is a one-line error naming the variables on it."""
    order: list[str] = []
    waiting = {v: set(p) for v, p in parents.items()}
    while waiting:
        ready = sorted(v for v, p in waiting.items() if not p)
        if not ready:
            raise AviError(
                f"the network has a cycle through {sorted(waiting)}; exact inference needs a directed acyclic graph"
            )
        for v in ready:
            order.append(v)
            del waiting[v]
        for p in waiting.values():
            p.difference_update(ready)
    return tuple(order)


def _coded_evidence(net: DiscreteBayesNet, evidence: Mapping[str, str | int] | None) -> dict[str, int]:
    return {v: net.state_index(v, s) for v, s in (evidence or {}).items()}


def _as_network(network: DiscreteBayesNet | Any) -> DiscreteBayesNet:
    return network if isinstance(network, DiscreteBayesNet) else DiscreteBayesNet.from_pgmpy(network)


def network_posterior(
    network: DiscreteBayesNet | Any, evidence: Mapping[str, str | int] | None = None, *, method: str = "enumeration"
) -> CategoricalTable | ProductCategorical:
    """The exact posterior of the free variables (in topological order) given the evidence, by
    ``method`` (see the module docstring). ``network`` may also be a pgmpy model; evidence maps
    variables to state names or codes. Enumeration gives the joint table (a
    :class:`CategoricalTable`); variable elimination and the junction tree give every free
    variable's exact marginal p(z_v | e) as a :class:`ProductCategorical`, whose joint is their
    product, without ever building the joint table. Both carry log p(e) as ``log_normalizer``."""
    if method not in EXACT_METHODS:
        raise ConfigError(f"unknown exact method {method!r}; choose from {list(EXACT_METHODS)}")
    net = _as_network(network)
    coded = _coded_evidence(net, evidence)
    free = [v for v in net.names if v not in coded]
    if not free:
        raise AviError("every variable is observed; there is no posterior to compute")
    if method == "enumeration":
        column = {v: i for i, v in enumerate(net.names)}

        def log_joint(z_free: Tensor) -> Tensor:
            z = torch.empty(z_free.shape[0], len(net.names), dtype=torch.long)
            z[:, [column[v] for v in free]] = z_free
            for v, k in coded.items():
                z[:, column[v]] = k
            return net.log_joint(z)

        return enumerate_posterior(log_joint, [net.cards[v] for v in free], free)
    components, log_evidence = _components(net.factors(coded))
    probs: dict[str, Tensor] = {}
    for factors in components:
        marginals, log_z = _component_marginals(factors, method)
        probs.update(marginals)
        log_evidence += log_z
    if not math.isfinite(log_evidence):
        raise AviError("the evidence has zero probability under the network; the posterior is undefined")
    return ProductCategorical(
        {v: probs[v] for v in free}, log_normalizer=torch.tensor(log_evidence, dtype=torch.float64)
    )


Factor = tuple[tuple[str, ...], Tensor]


def _components(factors: Sequence[Factor]) -> tuple[list[list[Factor]], float]:
    """The evidence-reduced CPTs grouped by the connected components of the free variables
    (variables sharing a factor are linked), and log of the product of the factors left without
    a free variable. Given e, the components are independent: p(z | e) = prod_c p(z_c | e)."""
    root: dict[str, str] = {}

    def find(v: str) -> str:
        while root[v] != v:
            v = root[v]
        return v

    for scope, _ in factors:
        for v in scope:
            root.setdefault(v, v)
        for v in scope[1:]:
            root[find(v)] = find(scope[0])
    groups: dict[str, list[Factor]] = {}
    for scope, table in factors:
        if scope:
            groups.setdefault(find(scope[0]), []).append((scope, table))
    constant = sum(float(table) for scope, table in factors if not scope)
    return list(groups.values()), constant


def _component_marginals(factors: Sequence[Factor], method: str) -> tuple[dict[str, Tensor], float]:
    """Each variable's normalised marginal in one connected component of free variables, and
    log Z = log sum_z prod_f f(z). Each factor is scaled to a largest entry of 1 (log Z adds the
    scales back), so that Z does not underflow under much evidence."""
    variables = sorted({v for scope, _ in factors for v in scope})
    peaks = [max(float(table.max()), _LOG_FLOOR) for _, table in factors]
    factors = [(scope, table - peak) for (scope, table), peak in zip(factors, peaks, strict=True)]
    if len(variables) == 1:  # a lone variable: the product of its unary factors
        unnormalised = {variables[0]: reduce(operator.mul, (table.exp() for _, table in factors))}
    else:
        unnormalised = _pgmpy_marginals(factors, variables, method)
    z = unnormalised[variables[0]].sum()
    return {v: u / z for v, u in unnormalised.items()}, float(z.log()) + sum(peaks)


def _pgmpy_marginals(factors: Sequence[Factor], variables: Sequence[str], method: str) -> dict[str, Tensor]:
    """sum_{z_-v} prod_f f(z) for each variable v of a connected component, by pgmpy: one variable
    elimination per variable on the component as a Markov network, or one calibration of its
    junction tree."""
    from pgmpy.factors.discrete import DiscreteFactor
    from pgmpy.inference import BeliefPropagation, VariableElimination
    from pgmpy.models import DiscreteMarkovNetwork

    cards = {v: int(t.shape[i]) for scope, t in factors for i, v in enumerate(scope)}
    cliques = _cliques([scope for scope, _ in factors], cards)
    tables = [DiscreteFactor(list(scope), list(t.shape), t.exp().numpy()) for scope, t in factors]
    # belief propagation divides factors, 0 / 0 where a state has probability zero (as under asia's
    # deterministic "either"), and pgmpy then sets those NaNs to 0: numpy's warning is noise
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "variable-elimination":
            model = DiscreteMarkovNetwork([(u, v) for c in cliques for i, u in enumerate(c) for v in c[i + 1 :]])
            model.add_factors(*tables)
            engine = VariableElimination(model)
            found = {v: engine.query([v], joint=True, show_progress=False) for v in variables}
        else:
            found = _junction_tree_marginals(BeliefPropagation(_junction_tree(cliques, tables, cards)), variables)
    return {v: torch.as_tensor(f.values, dtype=torch.float64) for v, f in found.items()}


def _cliques(scopes: Sequence[tuple[str, ...]], cards: Mapping[str, int]) -> list[tuple[str, ...]]:
    """The maximal cliques of the graph linking the variables of each scope, triangulated by
    greedy min-fill elimination (each step removes the variable whose neighbours need the
    fewest new edges to form a clique); a one-line :class:`AviError` when a clique's table
    would exceed :data:`MAX_CLIQUE` entries."""
    adjacent: dict[str, set[str]] = {v: set() for v in cards}
    for scope in scopes:
        for v in scope:
            adjacent[v].update(u for u in scope if u != v)

    def fill(v: str) -> int:
        return sum(1 for a in adjacent[v] for b in adjacent[v] if a < b and b not in adjacent[a])

    cliques: list[set[str]] = []
    while adjacent:
        v = min(adjacent, key=lambda u: (fill(u), math.prod(cards[w] for w in adjacent[u]), u))
        clique = adjacent.pop(v) | {v}
        size = math.prod(cards[u] for u in clique)
        if size > MAX_CLIQUE:
            raise AviError(
                f"exact inference needs a table over {len(clique)} variables ({size:,} entries, limit "
                f"{MAX_CLIQUE:,}); the network is too dense for it, use mean-field VI or MCMC"
            )
        if not any(clique <= c for c in cliques):  # a later clique never holds an earlier one's v
            cliques.append(clique)
        for u in clique - {v}:
            adjacent[u] |= clique - {u, v}
            adjacent[u].discard(v)
    return [tuple(sorted(c)) for c in cliques]


def _junction_tree(cliques: Sequence[tuple[str, ...]], tables: Sequence[Any], cards: Mapping[str, int]) -> Any:
    """A pgmpy ``JunctionTree``: the cliques of a triangulated graph joined by a maximum spanning
    tree, weighted by the size of the sepsets (which has the running intersection property), each
    table multiplied into the first clique that holds its scope."""
    from pgmpy.factors.discrete import DiscreteFactor
    from pgmpy.models import JunctionTree

    tree = JunctionTree()
    tree.add_nodes_from(cliques)
    # Prim's algorithm: link each clique outside the tree to its best neighbour inside it
    link = {c: (len(set(c) & set(cliques[0])), cliques[0]) for c in cliques[1:]}
    while link:
        clique = max(link, key=lambda c: link[c][0])
        tree.add_edge(link.pop(clique)[1], clique)
        for c, (weight, _) in link.items():
            if len(set(c) & set(clique)) > weight:
                link[c] = (len(set(c) & set(clique)), clique)
    potentials = {
        c: DiscreteFactor(list(c), [cards[v] for v in c], np.ones(math.prod(cards[v] for v in c))) for c in cliques
    }
    for table in tables:
        potentials[next(c for c in cliques if set(table.variables) <= set(c))].product(table, inplace=True)
    tree.add_factors(*potentials.values())
    return tree


def _junction_tree_marginals(engine: Any, variables: Sequence[str]) -> dict[str, Any]:
    """Calibrate the junction tree once; each variable's (unnormalised) marginal is then the sum
    of the smallest clique belief that holds it over the clique's other variables."""
    engine.calibrate()
    beliefs = engine.get_clique_beliefs()
    found = {}
    for v in variables:
        clique = min((c for c in beliefs if v in c), key=lambda c: math.prod(beliefs[c].cardinality))
        found[v] = beliefs[clique].marginalize([u for u in clique if u != v], inplace=False)
    return found


class ProductCategorical(Distribution):
    """p(z) = prod_v Categorical(z_v; probs[v]) over named variables: a mean-field q, or the
    exact marginals of a posterior whose joint is not built. ``mean`` and ``variance`` are
    those of the integer codes; ``log_normalizer`` is log p(e) where the marginals are exact."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, probs: Mapping[str, Tensor], log_normalizer: Tensor | None = None) -> None:
        self.names = tuple(probs)
        self.probs = dict(probs)
        self.log_normalizer = log_normalizer
        super().__init__(torch.Size(), torch.Size([len(self.names)]), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        # a reduction of the tensors (sum() would start from the int 0)
        return reduce(operator.add, (self.probs[v].log()[value[..., i].long()] for i, v in enumerate(self.names)))

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> Tensor:
        return torch.stack([Categorical(probs=self.probs[v]).sample(torch.Size(sample_shape)) for v in self.names], -1)

    def marginal(self, variable: str | int) -> Categorical:
        name = self.names[variable] if isinstance(variable, int) else variable
        return Categorical(probs=self.probs[name])

    def marginals(self) -> dict[str, Tensor]:
        return dict(self.probs)

    @property
    def mean(self) -> Tensor:
        return torch.stack([(p * torch.arange(p.numel(), dtype=p.dtype)).sum() for p in self.probs.values()])

    @property
    def variance(self) -> Tensor:
        second = [(p * torch.arange(p.numel(), dtype=p.dtype) ** 2).sum() for p in self.probs.values()]
        return torch.stack(second) - self.mean**2


class MeanFieldCategorical(ProductCategorical):
    """q(z) = prod_v Categorical(z_v; probs[v]) over named variables; ``elbo`` is the ELBO it reached."""

    def __init__(self, probs: Mapping[str, Tensor], elbo: float = float("nan")) -> None:
        super().__init__(probs)
        self.elbo = elbo


def mean_field(
    network: DiscreteBayesNet | Any, evidence: Mapping[str, str | int] | None = None, *,
    iterations: int = 200, restarts: int = 10, generator: torch.Generator | None = None, tol: float = 1e-10,
) -> MeanFieldCategorical:  # fmt: skip
    """Mean-field VI by coordinate ascent over the free variables, the best ELBO of ``restarts``
    runs: the first from uniform q_v, the others from q_v ~ Dirichlet(1) drawn with
    ``generator`` (the ELBO is multimodal, sharply so with deterministic CPTs). Each run stops
    after ``iterations`` sweeps or when no probability moves by more than ``tol``."""
    check_count("iterations", iterations)
    check_count("restarts", restarts)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    net = _as_network(network)
    coded = _coded_evidence(net, evidence)
    free = [v for v in net.names if v not in coded]
    fits = []
    for run in range(restarts):
        q = {
            v: torch.full((net.cards[v],), 1.0 / net.cards[v], dtype=torch.float64) if run == 0
            else sample_dirichlet(torch.ones(net.cards[v], dtype=torch.float64), generator)
            for v in free
        }  # fmt: skip
        fits.append(_cavi(net, coded, q, iterations, tol))
    return max(fits, key=lambda fit: fit.elbo)


def _cavi(
    net: DiscreteBayesNet, coded: dict[str, int], q: dict[str, Tensor], iterations: int, tol: float
) -> MeanFieldCategorical:
    """Coordinate ascent from q (updated in place) to a fixed point of the mean-field equations."""
    free = list(q)
    all_factors = net.factors(coded)
    factors = [(scope, table.clamp(min=_LOG_FLOOR)) for scope, table in all_factors if scope]
    constant = sum(float(table) for scope, table in all_factors if not scope)  # CPTs of observed variables only

    def expected(scope: tuple[str, ...], log_table: Tensor, keep: str | None) -> Tensor:
        """E_q[log f] over every variable of the scope but ``keep`` (a vector over keep's states)."""
        operands: list[Any] = [log_table, list(range(len(scope)))]
        for axis, v in enumerate(scope):
            if v != keep:
                operands += [q[v], [axis]]
        return torch.einsum(*operands, [scope.index(keep)] if keep is not None else [])

    for _ in range(iterations):
        change = 0.0
        for v in free:
            logits = reduce(operator.add, (expected(scope, table, v) for scope, table in factors if v in scope))
            new = torch.softmax(logits, 0)
            change = max(change, float((new - q[v]).abs().max()))
            q[v] = new
        if change < tol:
            break
    entropy = sum(float(Categorical(probs=p).entropy()) for p in q.values())
    elbo = constant + sum(float(expected(scope, table, None)) for scope, table in factors) + entropy
    return MeanFieldCategorical(q, elbo)
