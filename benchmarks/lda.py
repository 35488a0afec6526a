"""Topic models on a synthetic LDA corpus with known topics: stochastic VI, batch coordinate-ascent
VI, and amortized VI (ProdLDA and NVLDA), topic recovery, held-out perplexity and seconds.

The corpus is drawn from LDA (:func:`avi.models.lda.synthetic_corpus`): K topics over V words
from Dir(0.05), documents of about 100 words with Dir(0.5) proportions; held-out documents come
from the same topics. The methods, all given the true alpha and eta:

- ``svi``: stochastic VI (Hoffman et al. 2013; :func:`avi.inference.svi.fit_svi`), minibatches
  of 100 documents, rho_t = (1 + t)^-0.6.
- ``batch_vi``: batch coordinate-ascent mean-field VI (:func:`avi.inference.svi.fit_batch_vi`).
- ``prodlda`` / ``nvlda``: an encoder (one hidden layer of 100 softplus units) from a document's
  counts to a Gaussian q(z_d), theta = softmax(z), trained with the topics by the reparameterised
  ELBO through :func:`avi.inference.fit` (Adam, learning rate 0.01, batches of 50); product-of-
  experts and mixture decoders (:class:`avi.models.lda.AVITM`).

SVI and batch VI are run from 4 random starts (2 with --quick) and the run with the highest
full-data ELBO is kept: single runs can end in merged-and-split topic optima, more often with 10
topics than with 5 (see ``recovery``); every run's ELBO and TV are in the JSON, and
``good_restarts`` counts those with TV below 0.1. The kept run's full-data ELBO is traced against
seconds of fitting (evaluation not counted).

Measures: ``topic_tv``, the mean total variation between the true topics and the fitted ones
(E_q[beta_k], or softmax(beta_k)) after Hungarian matching; ``heldout_perplexity``,
exp(-sum_d bound_d / sum_d N_d) on the held-out documents, bound_d a lower bound on log p(w_d) of
the token sequence under the fitted topics: for LDA methods the mean-field local bound with the
topics fixed at E_q[beta] (:meth:`LDA.document_elbo`), for AVITM its ELBO with 10 samples less
the multinomial coefficient, for ``true_topics`` LDA's local bound with the generating topics.
``seconds``: fitting time of the kept run (``total_seconds``: all restarts). torch on one thread;
``other_processes_cpus`` records how many CPUs other processes kept busy on average meanwhile
(the machine may be shared, and the seconds grow with it).

``recovery``: how often single runs find the topics, against scikit-learn's online LDA
(``LatentDirichletAllocation(learning_method="online")``, the same alpha, eta, minibatches of 100
and epochs). For each of 8 seeds s a corpus is drawn with seed s and each method starts from
seed s: SVI from :func:`avi.inference.svi.init` (Gamma(100, 1/100) topics), SVI from
:func:`avi.inference.svi.init_from_counts` (the start it replaced), and scikit-learn, each under
two step-size schedules rho_t = (tau + t)^-kappa: avi's default (tau 1, kappa 0.7) and
scikit-learn's (learning_offset 10, learning_decay 0.7). A run recovers the topics when every true
topic's Hungarian match is within total variation 0.25 of it: a fitted topic that merges two true
ones is about 0.45 from each (true topics are 0.8-1 apart); in recovered runs the worst is 0.06-0.21.

Usage: ``python benchmarks/lda.py [--quick] [--out PATH]`` (JSON, default
benchmarks/results/lda.json).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation import elbo_per_point
from avi.evaluation.topics import match_topics
from avi.families import MeanFieldGaussian
from avi.inference import fit
from avi.inference.svi import SVIState, fit_batch_vi, fit_svi, init, init_from_counts
from avi.models.lda import AVITM, LDA, synthetic_corpus
from machine import brief_run_facts, cpu_snapshot, other_processes_cpus, write_report

DEFAULT_OUT = Path(__file__).parent / "results" / "lda.json"
FULL = {"topics": 10, "vocab": 200, "train_docs": 2000, "test_docs": 500, "doc_length": 100, "svi_epochs": 15,
        "batch_iterations": 30, "avitm_epochs": 100, "restarts": 4}  # fmt: skip
QUICK = {"topics": 5, "vocab": 100, "train_docs": 500, "test_docs": 200, "doc_length": 100, "svi_epochs": 20,
         "batch_iterations": 20, "avitm_epochs": 100, "restarts": 2}  # fmt: skip
ALPHA, ETA, LOCAL_TOL = 0.5, 0.05, 1e-3
RECOVERY_TV, RECOVERY_SEEDS = 0.25, 8
SCHEDULES = {"avi": (1.0, 0.7), "scikit-learn": (10.0, 0.7)}  # (tau, kappa) of rho_t = (tau + t)^-kappa


def lda_perplexity(model: LDA, counts: Tensor, topics: Tensor) -> float:
    """exp(-sum_d bound_d / sum_d N_d) with LDA's local bound on log p(w_d | topics)."""
    log_topics = topics.clamp(min=1e-300).log()
    local = model.local_step(counts, log_topics, tol=LOCAL_TOL)
    return math.exp(-model.document_elbo(counts, local.gamma, log_topics).sum().item() / counts.sum().item())


def fit_lda(method: str, model: LDA, counts: Tensor, mode: dict[str, Any], seed: int) -> dict[str, Any]:
    """One run from a random start, with the full-data ELBO after every epoch or iteration."""
    generator = torch.Generator().manual_seed(seed)
    state: SVIState = init(model, counts, generator=generator)
    seconds, trace = 0.0, [{"seconds": 0.0, "elbo": model.elbo(counts, state.lam, tol=LOCAL_TOL).item()}]
    for _ in range(mode["svi_epochs"] if method == "svi" else mode["batch_iterations"]):
        start = time.perf_counter()
        if method == "svi":
            state, _ = fit_svi(model, counts, epochs=1, batch_size=100, kappa=0.6, generator=generator, state=state,
                               local_tol=LOCAL_TOL)  # fmt: skip
        else:
            state, _ = fit_batch_vi(model, counts, iterations=1, generator=generator, state=state, local_tol=LOCAL_TOL)
        seconds += time.perf_counter() - start
        trace.append({"seconds": seconds, "elbo": model.elbo(counts, state.lam, tol=LOCAL_TOL).item()})
    return {"lam": state.lam, "seconds": seconds, "elbo": trace[-1]["elbo"], "trace": trace, "updates": state.t}


def run_lda(method: str, model: LDA, corpus: Any, test: Tensor, mode: dict[str, Any]) -> dict[str, Any]:
    runs = [fit_lda(method, model, corpus.counts, mode, seed) for seed in range(mode["restarts"])]
    for run in runs:
        run["topic_tv"] = match_topics(run["lam"], corpus.topics).mean_tv
    best = max(runs, key=lambda run: run["elbo"])
    topics = best["lam"] / best["lam"].sum(-1, keepdim=True)
    return {
        "topic_tv": best["topic_tv"], "heldout_perplexity": lda_perplexity(model, test, topics),
        "train_elbo_per_word": best["elbo"] / corpus.counts.sum().item(), "seconds": best["seconds"],
        "total_seconds": sum(run["seconds"] for run in runs), "updates": best["updates"],
        "restarts": [{"elbo": run["elbo"], "topic_tv": run["topic_tv"]} for run in runs],
        "good_restarts": sum(run["topic_tv"] < 0.1 for run in runs), "trace": best["trace"],
    }  # fmt: skip


def run_avitm(decoder: str, corpus: Any, test: Tensor, mode: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    k, v = mode["topics"], mode["vocab"]
    model = AVITM(v, k, alpha=ALPHA, decoder=decoder)
    family = MeanFieldGaussian(k)
    posterior = AmortizedPosterior(mlp_encoder(v, (100,), family.param_size, activation="softplus"), family)
    start = time.perf_counter()
    history = fit(model, posterior, Dataset(corpus.counts.float()), epochs=mode["avitm_epochs"], batch_size=50, lr=1e-2,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    seconds = time.perf_counter() - start
    x = test.float()
    elbo, _, _ = elbo_per_point(model, posterior, x, num_samples=10)
    log_coef = torch.lgamma(x.sum(-1) + 1) - torch.lgamma(x + 1).sum(-1)
    perplexity = math.exp(-(elbo - log_coef).sum().item() / x.sum().item())
    return {"topic_tv": match_topics(model.topics().double(), corpus.topics).mean_tv,
            "heldout_perplexity": perplexity, "train_elbo_per_doc": history.train[-1].elbo, "seconds": seconds,
            "epochs": mode["avitm_epochs"]}  # fmt: skip


def recovery_fits(corpus: Any, mode: dict[str, Any], seed: int, tau: float, kappa: float) -> dict[str, float]:
    """The largest matched total variation of one run of each method on ``corpus``, from ``seed``."""
    from sklearn.decomposition import LatentDirichletAllocation

    k, v, epochs = mode["topics"], mode["vocab"], mode["svi_epochs"]
    model = LDA(k, v, alpha=ALPHA, eta=ETA)
    worst = {}
    for name, start in (("avi", init), ("avi_counts_start", init_from_counts)):
        generator = torch.Generator().manual_seed(seed)
        state = start(model, corpus.counts, generator=generator)
        state, _ = fit_svi(model, corpus.counts, epochs=epochs, batch_size=100, generator=generator, tau=tau,
                           kappa=kappa, state=state, local_tol=LOCAL_TOL)  # fmt: skip
        worst[name] = match_topics(state.lam, corpus.topics).tv.max().item()
    peer = LatentDirichletAllocation(n_components=k, doc_topic_prior=ALPHA, topic_word_prior=ETA,
                                     learning_method="online", learning_offset=tau, learning_decay=kappa,
                                     batch_size=100, max_iter=epochs, random_state=seed)  # fmt: skip
    peer.fit(corpus.counts.numpy())
    worst["scikit-learn"] = match_topics(torch.as_tensor(peer.components_), corpus.topics).tv.max().item()
    return worst


def run_recovery(mode: dict[str, Any]) -> dict[str, Any]:
    """Per schedule: each method's largest matched TV per seed and its count of recoveries."""
    corpora = [synthetic_corpus(mode["train_docs"], mode["vocab"], mode["topics"], doc_length=mode["doc_length"],
                                alpha=ALPHA, eta=ETA, seed=seed) for seed in range(RECOVERY_SEEDS)]  # fmt: skip
    result: dict[str, Any] = {"tv_bound": RECOVERY_TV, "batch_size": 100, "epochs": mode["svi_epochs"]}
    for schedule, (tau, kappa) in SCHEDULES.items():
        runs = [recovery_fits(corpus, mode, seed, tau, kappa) for seed, corpus in enumerate(corpora)]
        result[schedule] = {"tau": tau, "kappa": kappa, **{
            name: {"max_tv": [run[name] for run in runs], "recovered": sum(run[name] < RECOVERY_TV for run in runs)}
            for name in runs[0]
        }}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and shorter runs, under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = cpu_snapshot()
    mode = QUICK if args.quick else FULL
    k, v = mode["topics"], mode["vocab"]
    docs = mode["train_docs"] + mode["test_docs"]
    full = synthetic_corpus(docs, v, k, doc_length=mode["doc_length"], alpha=ALPHA, eta=ETA, seed=0)
    corpus = full._replace(counts=full.counts[: mode["train_docs"]], proportions=full.proportions[: mode["train_docs"]])
    test = full.counts[mode["train_docs"] :]
    model = LDA(k, v, alpha=ALPHA, eta=ETA)
    methods = {
        "svi": run_lda("svi", model, corpus, test, mode),
        "batch_vi": run_lda("batch", model, corpus, test, mode),
        "prodlda": run_avitm("product", corpus, test, mode),
        "nvlda": run_avitm("mixture", corpus, test, mode),
    }
    reference = lda_perplexity(model, test, corpus.topics)
    recovery = run_recovery(mode)
    print(f"LDA corpus: K={k} topics, V={v} words, {mode['train_docs']} training, {mode['test_docs']} held out")
    print(f"{'method':<10}{'topic TV':>10}{'perplexity':>12}{'seconds':>9}")
    for name, r in methods.items():
        print(f"{name:<10}{r['topic_tv']:>10.3f}{r['heldout_perplexity']:>12.2f}{r['seconds']:>9.1f}")
    print(f"{'true':<10}{0.0:>10.3f}{reference:>12.2f}{'-':>9}")
    for schedule in SCHEDULES:
        counts = ", ".join(f"{name} {r['recovered']}" for name, r in recovery[schedule].items() if isinstance(r, dict))
        print(f"topics recovered in {RECOVERY_SEEDS} seeds, {schedule}'s schedule: {counts}")
    result = {
        "benchmark": "lda", "quick": args.quick, "mode": mode, "alpha": ALPHA, "eta": ETA,
        "methods": methods, "true_topics": {"heldout_perplexity": reference}, "recovery": recovery,
        "other_processes_cpus": other_processes_cpus(started),
        **brief_run_facts(),
    }  # fmt: skip
    write_report(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
