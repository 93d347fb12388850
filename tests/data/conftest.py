"""Fixtures of the data tests (helpers live in data_fakes.py)."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)
