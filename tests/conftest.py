"""Test-session settings: downloads and cached tokenizers go to a temporary folder, never the user's cache."""

import os
import tempfile

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache():
    with tempfile.TemporaryDirectory(prefix="minibert-cache-") as tmp:
        old = os.environ.get("MINIBERT_CACHE_DIR")
        os.environ["MINIBERT_CACHE_DIR"] = tmp     # subprocesses inherit it
        yield tmp
        if old is None:
            os.environ.pop("MINIBERT_CACHE_DIR", None)
        else:
            os.environ["MINIBERT_CACHE_DIR"] = old
