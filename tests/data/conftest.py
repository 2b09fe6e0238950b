"""The data tests' shared dataset: the session's 3-piece embedded dataset of 12 s pieces."""

import pytest


@pytest.fixture(scope="module")
def data_dir(small_embedded_dataset):
    return small_embedded_dataset(max_piece_seconds=12.0)
