"""Exact inference on the asia network (Lauritzen and Spiegelhalter 1988), built here: avi's
enumeration against pgmpy's variable elimination and junction tree; mean-field VI on it."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from avi.baselines import bayesnet
from avi.baselines.bayesnet import DiscreteBayesNet, mean_field, network_posterior
from avi.errors import AviError, ConfigError

YES_NO = ("yes", "no")


def bern(*p_yes: float) -> torch.Tensor:
    """Rows (p(yes), p(no)) for each parent configuration, first parent slowest."""
    p = torch.tensor(p_yes, dtype=torch.float64)
    return torch.stack([p, 1 - p], -1)


def asia() -> DiscreteBayesNet:
    cpds = {
        "asia": ([], bern(0.01)[0]),
        "tub": (["asia"], bern(0.05, 0.01)),
        "smoke": ([], bern(0.5)[0]),
        "lung": (["smoke"], bern(0.1, 0.01)),
        "bronc": (["smoke"], bern(0.6, 0.3)),
        "either": (["lung", "tub"], bern(1.0, 1.0, 1.0, 0.0).reshape(2, 2, 2)),  # lung OR tub
        "xray": (["either"], bern(0.98, 0.05)),
        "dysp": (["bronc", "either"], bern(0.9, 0.8, 0.7, 0.1).reshape(2, 2, 2)),
    }
    return DiscreteBayesNet(cpds, {v: YES_NO for v in cpds})


EVIDENCE = {"xray": "yes", "dysp": "yes", "asia": "no"}


def test_enumeration_variable_elimination_and_junction_tree_agree_on_asia() -> None:
    pytest.importorskip("pgmpy")
    net = asia()
    exact = network_posterior(net, EVIDENCE, method="enumeration")
    assert exact.names == ("smoke", "bronc", "lung", "tub", "either")
    assert exact.probs.sum().item() == pytest.approx(1.0)
    for method in ("variable-elimination", "junction-tree"):
        # every free variable's exact marginal, and log p(e), without the joint table
        other = network_posterior(net, EVIDENCE, method=method)
        assert other.names == exact.names
        for v in exact.names:
            torch.testing.assert_close(other.marginal(v).probs, exact.marginal(v).probs, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(other.log_normalizer, exact.log_normalizer, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(other.mean, exact.mean, rtol=1e-9, atol=1e-12)
        # its joint is the product of the marginals (which the posterior is not: smoke, bronc are dependent)
        z = other.sample((5,))
        product = sum(exact.marginal(v).probs.log()[z[:, i]] for i, v in enumerate(exact.names))
        torch.testing.assert_close(other.log_prob(z), product)
    # Hand checks: p(lung | smoke) = 0.1; p(xray = yes) from the chain lung, tub -> either -> xray.
    assert network_posterior(net, {"asia": "no", "smoke": "yes"}).marginal("lung").probs[0].item() == pytest.approx(0.1)
    free = network_posterior(net, {"xray": 0})
    assert free.log_normalizer.exp().item() == pytest.approx(_p_xray_yes())


def _p_xray_yes() -> float:
    p_lung = 0.5 * 0.1 + 0.5 * 0.01
    p_tub = 0.01 * 0.05 + 0.99 * 0.01
    p_either = 1 - (1 - p_lung) * (1 - p_tub)
    return p_either * 0.98 + (1 - p_either) * 0.05


def test_pgmpy_round_trip_keeps_the_tables() -> None:
    pytest.importorskip("pgmpy")
    net = asia()
    back = DiscreteBayesNet.from_pgmpy(net.to_pgmpy())
    assert set(back.names) == set(net.names)
    for v in net.names:
        assert back.parents[v] == net.parents[v] and back.states[v] == YES_NO
        torch.testing.assert_close(back.tables[v], net.tables[v])


def test_mean_field_bounds_the_evidence_and_finds_the_likely_explanation() -> None:
    net = asia()
    exact = network_posterior(net, EVIDENCE)
    q = mean_field(net, EVIDENCE, restarts=5, generator=torch.Generator().manual_seed(0))
    assert q.names == exact.names
    # ELBO <= log p(e), with equality only if the posterior factorises (it does not here).
    assert q.elbo < exact.log_normalizer.item()
    # The exact ELBO of q, by enumeration: E_q[log p(z, e)] - E_q[log q].
    joint = exact.probs.log() + exact.log_normalizer
    q_table = torch.einsum("a,b,c,d,e->abcde", *[q.probs[v] for v in exact.names])
    inside = q_table > 0
    elbo = (q_table[inside] * (joint[inside] - q_table[inside].log())).sum()
    assert q.elbo == pytest.approx(elbo.item(), abs=1e-6)
    # The ELBO is multimodal (either = lung OR tub is deterministic); restarts never do worse.
    assert q.elbo >= mean_field(net, EVIDENCE, restarts=1).elbo


def test_a_network_with_a_cycle_is_a_one_line_error() -> None:
    flat = torch.full((2, 2), 0.5, dtype=torch.float64)
    with pytest.raises(AviError, match="cycle through \\['a', 'b'\\]; exact inference needs a directed acyclic graph"):
        network_posterior(DiscreteBayesNet({"a": (["b"], flat), "b": (["a"], flat), "c": ([], flat[0])}))


@pytest.mark.parametrize(
    "evidence, method, message",
    [
        ({"xray": "maybe"}, "enumeration", "unknown state 'maybe'"),
        ({"weather": "yes"}, "enumeration", "unknown variable 'weather'"),
        ({}, "gibbs", "unknown exact method"),
    ],
)
def test_bad_queries_are_one_line_errors(evidence, method, message) -> None:
    with pytest.raises(ConfigError, match=message):
        network_posterior(asia(), evidence, method=method)


def two_chains() -> DiscreteBayesNet:
    """a -> b and c -> d: the moral graph has two components."""
    cpds = {
        "a": ([], bern(0.3)[0]),
        "b": (["a"], bern(0.9, 0.2)),
        "c": ([], bern(0.6)[0]),
        "d": (["c"], bern(0.5, 0.0)),
    }
    return DiscreteBayesNet(cpds, {v: YES_NO for v in cpds})


@pytest.mark.parametrize("method", ["variable-elimination", "junction-tree"])
def test_a_disconnected_network_is_solved_component_by_component(method: str) -> None:
    pytest.importorskip("pgmpy")
    posterior = network_posterior(two_chains(), {"b": "yes", "d": "yes"}, method=method)
    assert posterior.names == ("a", "c")
    # Bayes in each chain: p(a | b) = 0.3 * 0.9 / (0.3 * 0.9 + 0.7 * 0.2); p(c = yes | d = yes) = 1.
    assert posterior.marginal("a").probs[0].item() == pytest.approx(0.27 / 0.41)
    assert posterior.marginal("c").probs[0].item() == pytest.approx(1.0)
    assert posterior.log_normalizer.exp().item() == pytest.approx(0.41 * 0.6 * 0.5)
    # c -> d stays a component of two free variables, for pgmpy: d = yes with probability 0.6 * 0.5
    posterior = network_posterior(two_chains(), {"b": "yes"}, method=method)
    assert posterior.names == ("a", "c", "d")
    assert posterior.marginal("a").probs[0].item() == pytest.approx(0.27 / 0.41)
    assert posterior.marginal("d").probs[0].item() == pytest.approx(0.3)
    # evidence on a whole component leaves the other's marginals at their prior
    assert network_posterior(two_chains(), {"c": "no", "d": "no"}, method=method).marginal("b").probs[0].item() == (
        pytest.approx(0.3 * 0.9 + 0.7 * 0.2)
    )


def _example(name: str):
    """One of pgmpy's bundled example networks (read from its package, no download)."""
    utils = pytest.importorskip("pgmpy.utils")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # get_example_model's deprecation notice
        return utils.get_example_model(name)


@pytest.mark.parametrize(
    "name, evidence",
    [
        ("sachs", {"Erk": "HIGH", "PIP3": "LOW"}),  # its moral graph has several components
        ("child", {"LowerBodyO2": "<5", "CO2Report": ">=7.5", "Disease": "TGA"}),
        ("alarm", {"HRBP": "HIGH", "BP": "LOW", "VENTTUBE": "ZERO", "HYPOVOLEMIA": "TRUE"}),
    ],
)
def test_real_networks_match_pgmpys_variable_elimination(name: str, evidence: dict[str, str]) -> None:
    from pgmpy.inference import VariableElimination

    model = _example(name)
    net = DiscreteBayesNet.from_pgmpy(model)
    reference = VariableElimination(model)
    for method in ("variable-elimination", "junction-tree"):
        posterior = network_posterior(net, evidence, method=method)
        assert posterior.names == tuple(v for v in net.names if v not in evidence)
        for v in posterior.names:
            factor = reference.query([v], evidence=evidence, show_progress=False)
            states = [str(s) for s in factor.state_names[v]]
            expected = torch.as_tensor(factor.values, dtype=torch.float64)[[states.index(s) for s in net.states[v]]]
            torch.testing.assert_close(posterior.marginal(v).probs, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["enumeration", "variable-elimination", "junction-tree"])
def test_impossible_evidence_is_a_one_line_error(method: str) -> None:
    pytest.importorskip("pgmpy")
    # either = lung OR tub, so lung = yes with either = no never happens
    with pytest.raises(AviError, match="zero probability under the"):
        network_posterior(asia(), {"lung": "yes", "either": "no"}, method=method)
    # nor does d = yes with c = no, in a component without free variables
    with pytest.raises(AviError, match="zero probability under the"):
        network_posterior(two_chains(), {"c": "no", "d": "yes"}, method=method)


def test_child_is_too_large_to_enumerate_but_not_to_eliminate() -> None:
    net = DiscreteBayesNet.from_pgmpy(_example("child"))
    with pytest.raises(AviError, match="too large .*; use variable elimination or MCMC"):
        network_posterior(net, {"Age": "0-3_days"})
    posterior = network_posterior(net, {"Age": "0-3_days"}, method="variable-elimination")
    assert len(posterior.names) == 19 and posterior.log_normalizer.item() < 0
    assert all(p.sum().item() == pytest.approx(1.0) for p in posterior.marginals().values())


@pytest.mark.parametrize("method", ["variable-elimination", "junction-tree"])
def test_a_network_too_dense_for_its_tables_is_a_one_line_error(method: str, monkeypatch) -> None:
    pytest.importorskip("pgmpy")
    monkeypatch.setattr(bayesnet, "MAX_CLIQUE", 4)  # asia's cliques hold three binary variables
    with pytest.raises(AviError, match=r"a table over 3 variables \(8 entries, limit 4\); the network is too dense"):
        network_posterior(asia(), EVIDENCE, method=method)


@pytest.mark.parametrize("method", ["variable-elimination", "junction-tree"])
def test_much_evidence_does_not_underflow(method: str) -> None:
    pytest.importorskip("pgmpy")
    # r -> s, and r -> c_i for 700 children observed at state 0: p(e) = (0.1**700 + 0.3**700) / 2 < 1e-366
    n = 700
    children = {f"c{i}": (["r"], torch.tensor([[0.1, 0.9], [0.3, 0.7]], dtype=torch.float64)) for i in range(n)}
    net = DiscreteBayesNet(
        {"r": ([], torch.tensor([0.5, 0.5], dtype=torch.float64)), "s": (["r"], bern(0.9, 0.2)), **children}
    )
    posterior = network_posterior(net, dict.fromkeys(children, 0), method=method)
    log_p = math.log(0.5) + n * math.log(0.3) + math.log1p((1 / 3) ** n)
    assert posterior.log_normalizer.item() == pytest.approx(log_p, rel=1e-12)
    torch.testing.assert_close(posterior.marginal("s").probs, torch.tensor([0.2, 0.8], dtype=torch.float64))
