"""Makes tests/ importable (for tests/support.py) and holds suite-wide pytest settings."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

CORPUS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpus")


@pytest.fixture
def corpus_dir():
    """../shared/corpus beside the checkout; tests using it skip where it is absent."""
    if not os.path.isdir(CORPUS):
        pytest.skip("../shared/corpus is not present (a user's clone has none)")
    return os.path.abspath(CORPUS)
