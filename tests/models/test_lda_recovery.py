"""Single runs of LDA's stochastic VI find the generating topics at least as often as
scikit-learn's online LDA (Hoffman, Blei and Bach 2010) given the same corpora, priors, step-size
schedule, minibatches and epochs: the comparison turns on the start, Gamma(100, 1/100) topics
(:func:`avi.inference.svi.init`). benchmarks/lda.py makes the same comparison on 10-topic corpora."""

from __future__ import annotations

import pytest
import torch

from avi.evaluation.topics import match_topics
from avi.inference.svi import fit_svi
from avi.models.lda import LDA, Corpus, synthetic_corpus

SEEDS = range(8)
K, V, ALPHA, ETA = 5, 100, 0.5, 0.05
EPOCHS, BATCH, TAU, KAPPA = 10, 50, 10.0, 0.7  # scikit-learn's schedule: learning_offset 10, learning_decay 0.7

# A run recovers the topics when every true topic's Hungarian match (total variation) is within
# 0.25. True topics from Dir(0.05) over 100 words are 0.8-1 apart, so a fitted topic that merges
# two of them is about 0.45 from each and one true topic split over two fitted ones leaves another
# unmatched (0.6-0.95); in the runs that recover them, the worst topic is 0.09-0.15 from its match.
TV_BOUND = 0.25


def _corpus(seed: int) -> Corpus:
    return synthetic_corpus(500, V, K, doc_length=100, alpha=ALPHA, eta=ETA, seed=seed)


def _avi_recovers(corpus: Corpus, seed: int) -> bool:
    model = LDA(K, V, alpha=ALPHA, eta=ETA)
    generator = torch.Generator().manual_seed(seed)
    state, _ = fit_svi(model, corpus.counts, epochs=EPOCHS, batch_size=BATCH, generator=generator, tau=TAU, kappa=KAPPA)
    return match_topics(state.lam, corpus.topics).tv.max().item() < TV_BOUND


def _scikit_learn_recovers(corpus: Corpus, seed: int) -> bool:
    from sklearn.decomposition import LatentDirichletAllocation

    peer = LatentDirichletAllocation(
        n_components=K, doc_topic_prior=ALPHA, topic_word_prior=ETA, learning_method="online",
        learning_offset=TAU, learning_decay=KAPPA, batch_size=BATCH, max_iter=EPOCHS, random_state=seed,
    )  # fmt: skip
    peer.fit(corpus.counts.numpy())
    return match_topics(torch.as_tensor(peer.components_), corpus.topics).tv.max().item() < TV_BOUND


@pytest.mark.slow
def test_svi_recovers_the_topics_at_least_as_often_as_scikit_learn() -> None:
    """Measured over these 8 corpora and starts: avi 7, scikit-learn 4; avi from the start it
    replaced (random topics carrying the corpus's counts, :func:`init_from_counts`) 2."""
    pytest.importorskip("sklearn")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # products of (50, 5) by (5, 100): more threads only spin on a loaded machine
    try:
        avi = [_avi_recovers(_corpus(seed), seed) for seed in SEEDS]
    finally:
        torch.set_num_threads(threads)
    peer = [_scikit_learn_recovers(_corpus(seed), seed) for seed in SEEDS]
    assert sum(avi) >= sum(peer), (avi, peer)
