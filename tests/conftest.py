"""Shared fixtures. Data from ../shared is optional: tests that need it skip cleanly."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("BERTLAB_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared, or skip the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    return path


@pytest.fixture
def uncased_vocab_path() -> pathlib.Path:
    return shared_path("data", "vocab", "bert-base-uncased-vocab.txt")


@pytest.fixture
def cased_vocab_path() -> pathlib.Path:
    return shared_path("data", "vocab", "bert-base-cased-vocab.txt")


@pytest.fixture
def minilm_dir() -> pathlib.Path:
    return shared_path("models", "all-MiniLM-L6-v2")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run only with BERTLAB_SLOW=1; CI runs their short versions."""
    if os.environ.get("BERTLAB_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set BERTLAB_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
