"""Shared fixtures. Data from ../shared is optional: tests that need it skip cleanly."""

import os
import pathlib
import random
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("BERTLAB_SHARED", REPO.parent / "shared"))

# The `bertlab` command keeps compiled programs in ~/.cache/bertlab/xla; tests stay hermetic
# (tests/test_compile_cache.py turns it on in a temporary directory, and the
# module_compilation_cache fixture below gives a module its own).
os.environ["BERTLAB_COMPILATION_CACHE"] = "off"
# ... and the measured peak FLOP/s (bertlab.train.peak_cache) is not cached in the real home:
# tests/test_peak_cache.py points it at a temporary directory.
os.environ["BERTLAB_CACHE_DIR"] = "off"


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared, or skip the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (shared data is optional)")
    return path


def prepared_overrides(workdir) -> list[str]:
    """Command-line overrides that reuse a finished pretraining run's vocabulary and shards
    (identical data, no re-creation): a second run of the same data in seconds."""
    workdir = pathlib.Path(workdir)
    return [f"--config.data.prepared={workdir / 'data'}",
            f"--config.data.vocab={workdir / 'vocab.txt'}"]


def write_random_corpus(path, words, *, seed, documents, sentences, words_per_sentence,
                        capitalize=False) -> str:
    """A deterministic corpus file: `documents` blank-line-separated documents of
    randint(*sentences) sentences of randint(*words_per_sentence) words drawn from `words`."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(documents):
            for _ in range(rng.randint(*sentences)):
                line = " ".join(rng.choice(words) for _ in range(rng.randint(*words_per_sentence)))
                f.write((line.capitalize() if capitalize else line) + ".\n")
            f.write("\n")
    return str(path)


def run_on_forced_cpu_devices(code: str, devices: int) -> str:
    """Run a Python snippet in a fresh interpreter that sees `devices` CPU devices (XLA's flag
    must be set before jax starts, hence the subprocess); returns its stdout."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


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


@pytest.fixture(scope="module")
def module_compilation_cache(tmp_path_factory):
    """A persistent XLA cache private to one test module: programs compiled by one test are
    reused by later tests of the same shapes (the loop tests rebuild the same steps), and the
    global settings are restored afterwards. Opt in with
    `pytestmark = pytest.mark.usefixtures("module_compilation_cache")`."""
    import jax
    from jax._src import compilation_cache as cache

    previous = (jax.config.jax_compilation_cache_dir,
                jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
    cache.reset_cache()
