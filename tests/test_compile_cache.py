"""The command line's persistent compilation cache: where it goes, how it is turned off, and that a
second `bertlab pretrain` loads its compiled steps from disk instead of compiling them."""

import os

import jax
import pytest

from bertlab import cli
from bertlab.train import compile_cache


@pytest.fixture
def jax_cache_settings():
    """Restores JAX's global cache settings (enable() changes them for the whole process)."""
    from jax._src import compilation_cache as cache

    previous = (jax.config.jax_compilation_cache_dir,
                jax.config.jax_persistent_cache_min_compile_time_secs)
    jax.config.update("jax_compilation_cache_dir", None)
    cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", previous[1])
    cache.reset_cache()


def test_where_the_cache_goes(tmp_path, jax_cache_settings):
    assert compile_cache.default_dir({"XDG_CACHE_HOME": "/x"}) == "/x/bertlab/xla"
    assert compile_cache.enable({compile_cache.ENV: "off"}) is None
    assert compile_cache.enable({compile_cache.ENV: ""}) is None
    assert jax.config.jax_compilation_cache_dir is None
    target = tmp_path / "cache"
    assert compile_cache.enable({compile_cache.ENV: str(target)}) == str(target)
    assert target.is_dir() and jax.config.jax_compilation_cache_dir == str(target)
    # a directory the user gave JAX is kept
    assert compile_cache.enable({compile_cache.ENV: str(tmp_path / "other")}) == str(target)
    assert not (tmp_path / "other").exists()


def test_unwritable_directory_means_no_cache(tmp_path, jax_cache_settings):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert compile_cache.enable({compile_cache.ENV: str(blocker / "xla")}) is None
    assert jax.config.jax_compilation_cache_dir is None


def test_second_pretrain_loads_its_steps_from_the_cache(tmp_path, monkeypatch, jax_cache_settings):
    from jax import monitoring

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(f"w{(i * 7 + j) % 40}" for j in range(30)) + "."
                                  for i in range(30)) + "\n")
    cache_dir = tmp_path / "xla"
    monkeypatch.setenv(compile_cache.ENV, str(cache_dir))
    events = []

    def listen(name, **kwargs):
        events.append(name)

    monitoring.register_event_listener(listen)
    try:
        args = ["pretrain", "--config", "configs/pretrain.py:quick",
                f"--config.data.corpus={corpus}", "--config.train.num_steps=2",
                "--config.train.eval_every=0", "--config.train.peak_flops=1e9"]
        assert cli.main([*args, "--workdir", str(tmp_path / "a")]) == 0
        written = set(os.listdir(cache_dir))
        assert written, "the first run wrote nothing to the cache"
        first_hits = events.count("/jax/compilation_cache/cache_hits")
        assert cli.main([*args, "--workdir", str(tmp_path / "b")]) == 0
        # the train and eval steps of the second run came from disk; nothing new was compiled
        assert events.count("/jax/compilation_cache/cache_hits") - first_hits >= 2
        assert set(os.listdir(cache_dir)) == written
    finally:
        monitoring.unregister_event_listener(listen)
