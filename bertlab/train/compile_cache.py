"""A persistent XLA compilation cache for the command line.

Compiling the train step is the one start-up phase where we are slower than transformers' Flax
BERT (experiments/bench/README.md: on-device masking, the NSP head and dropout make the program
bigger). Most launches compile a program some earlier launch already compiled: the other seeds
and arms of a sweep with the same shapes, a run resumed after preemption, evaluate/predict after
finetune. JAX can keep compiled programs on disk, keyed by the program and the backend, so those
launches load the step instead of compiling it.

Only the `bertlab` command turns it on (library users keep JAX's own setting). Where:
$BERTLAB_COMPILATION_CACHE if set ("off" or empty disables it), else
$XDG_CACHE_HOME/bertlab/xla (~/.cache/bertlab/xla). A cache directory already configured for
JAX (JAX_COMPILATION_CACHE_DIR or jax.config) is left as it is. An unwritable directory only
means no cache: a run never fails for it.
"""

from __future__ import annotations

import os

ENV = "BERTLAB_COMPILATION_CACHE"
MIN_COMPILE_SECONDS = 1.0   # programs quicker to compile than this are not worth a disk entry


def default_dir(env=os.environ) -> str:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bertlab", "xla")


def enable(env=os.environ) -> str | None:
    """Points JAX's persistent cache at the bertlab directory; returns it (None: not enabled)."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user configured JAX's cache themselves
        return jax.config.jax_compilation_cache_dir
    path = env.get(ENV, default_dir(env)).strip()
    if not path or path.lower() == "off":
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
