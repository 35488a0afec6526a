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
full-data ELBO is kept: single runs often end in merged-and-split topic optima, more often with 10
topics than with 5; every run's ELBO and TV are in the JSON, and ``good_restarts`` counts those
with TV below 0.1. The kept run's full-data ELBO is traced against seconds of fitting (evaluation
not counted).

Measures: ``topic_tv``, the mean total variation between the true topics and the fitted ones
(E_q[beta_k], or softmax(beta_k)) after Hungarian matching; ``heldout_perplexity``,
exp(-sum_d bound_d / sum_d N_d) on the held-out documents, bound_d a lower bound on log p(w_d) of
the token sequence under the fitted topics: for LDA methods the mean-field local bound with the
topics fixed at E_q[beta] (:meth:`LDA.document_elbo`), for AVITM its ELBO with 10 samples less
the multinomial coefficient, for ``true_topics`` LDA's local bound with the generating topics.
``seconds``: fitting time of the kept run (``total_seconds``: all restarts). torch on one thread.

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
from machine import brief_run_facts, write_report
from torch import Tensor

from avi.data import Dataset
from avi.encoders import AmortizedPosterior, mlp_encoder
from avi.evaluation import elbo_per_point
from avi.evaluation.topics import match_topics
from avi.families import MeanFieldGaussian
from avi.inference import fit
from avi.inference.svi import SVIState, fit_batch_vi, fit_svi, init
from avi.models.lda import AVITM, LDA, synthetic_corpus

DEFAULT_OUT = Path(__file__).parent / "results" / "lda.json"
FULL = {"topics": 10, "vocab": 200, "train_docs": 2000, "test_docs": 500, "doc_length": 100, "svi_epochs": 15,
        "batch_iterations": 30, "avitm_epochs": 100, "restarts": 4}  # fmt: skip
QUICK = {"topics": 5, "vocab": 100, "train_docs": 500, "test_docs": 200, "doc_length": 100, "svi_epochs": 20,
         "batch_iterations": 20, "avitm_epochs": 100, "restarts": 2}  # fmt: skip
ALPHA, ETA, LOCAL_TOL = 0.5, 0.05, 1e-3


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
            state, _ = fit_svi(model, counts, epochs=1, batch_size=100, kappa=0.6, generator=generator, state=state, local_tol=LOCAL_TOL)
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
    return {"topic_tv": match_topics(model.topics().double(), corpus.topics).mean_tv, "heldout_perplexity": perplexity,
            "train_elbo_per_doc": history.train[-1].elbo, "seconds": seconds, "epochs": mode["avitm_epochs"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and shorter runs, under a minute")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
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
    print(f"LDA corpus: K={k} topics, V={v} words, {mode['train_docs']} training and {mode['test_docs']} held-out documents")
    print(f"{'method':<10}{'topic TV':>10}{'perplexity':>12}{'seconds':>9}")
    for name, r in methods.items():
        print(f"{name:<10}{r['topic_tv']:>10.3f}{r['heldout_perplexity']:>12.2f}{r['seconds']:>9.1f}")
    print(f"{'true':<10}{0.0:>10.3f}{reference:>12.2f}{'-':>9}")
    result = {
        "benchmark": "lda", "quick": args.quick, "mode": mode, "alpha": ALPHA, "eta": ETA,
        "methods": methods, "true_topics": {"heldout_perplexity": reference},
        **brief_run_facts(),
    }  # fmt: skip
    write_report(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
