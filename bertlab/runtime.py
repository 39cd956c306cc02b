"""Process-wide XLA:CPU settings, chosen per command and applied before jax starts its backend.

XLA reads XLA_FLAGS once, when jax creates its first backend, so the flags must be in the
environment before anything touches a device: `bertlab.cli` calls configure(command) first
thing. Model formulation belongs to bertlab.models; this module only picks how XLA compiles it.

What was measured (experiments/bench/equal_shapes.py and equal_shapes.md: the 2-core AMD EPYC
of this project, jaxlib 0.10.2, every arm interleaved in one process, 3-4 runs, machine shared
with other jobs at load 4-7, so each figure is +-20 %):

- Dots: jaxlib 0.10.2 sends every dot to YNNPACK ("ynn fusions"; the default list of
  --xla_cpu_experimental_ynn_fusion_type is individual_dot + reduce, where "reduce" also pulls
  the attention softmax with both attention matmuls, and the output projection with the
  residual LayerNorm, into single YNNPACK subgraphs). For the INFERENCE forward pass that is
  slow: with the list emptied (every dot on XLA's own Eigen kernels) MiniLM inference (64 x
  128) took 0.58-0.77x the time (three runs), with individual dots only 0.68x. For the
  TRAINING step the default is best: Eigen took 1.04-1.46x the time, individual dots 1.06x
  (the backward pass's transposed-operand dots run faster in YNNPACK). So inference commands
  get the empty list and training commands keep XLA's default.
- Tried, not kept: oneDNN's graph fusions (--xla_cpu_use_onednn with
  --xla_cpu_experimental_onednn_fusion_type=dot): the fine-tune step compiles and runs no
  faster than Eigen, and the inference program aborts the process ("partition compile
  failed"). --xla_cpu_enable_fast_math: changes erf/exp accuracy, so it is out for parity
  whatever it buys. The XNNPACK dot path (--xla_cpu_experimental_xnn_fusion_type=dot) produced
  no XNNPACK fusion for these programs. --xla_cpu_multi_thread_eigen=false halves the threads.
- Not a flag: the default PRNG (threefry) draws dropout masks at ~12-16 ns per element on this
  CPU, ~0.5 s of a MiniLM step; the "rbg" implementations were slower still here
  (experiments/bench/dropout_bits.py). A hashed-mask dropout is proposed to bertlab.models in
  experiments/bench/README.md instead of a process-wide change, which would also change every
  seeded initialisation.

Set BERTLAB_RUNTIME=off to keep XLA's own defaults (to measure them, or to rule us out).
"""

from __future__ import annotations

import os

# Commands that only run forward passes (bertlab/commands/<name>.py).
INFERENCE_COMMANDS = ("evaluate", "predict", "embed", "similarity")

# XLA flag -> value, per kind of command. An empty value is meaningful: the empty list.
INFERENCE_FLAGS: dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": ""}
TRAINING_FLAGS: dict[str, str] = {}

# The same settings as per-program compile options (jax's .compile(compiler_options=...)),
# for benchmarks that compare several settings in one process.
COMPILER_OPTIONS: dict[str, dict[str, str]] = {"inference": dict(INFERENCE_FLAGS),
                                               "training": dict(TRAINING_FLAGS)}

ENV_SWITCH = "BERTLAB_RUNTIME"


def kind_of(command: str | None) -> str:
    """"inference" for commands that only run forward passes, else "training"."""
    return "inference" if command in INFERENCE_COMMANDS else "training"


def flags_for(command: str | None) -> dict[str, str]:
    return dict(INFERENCE_FLAGS if kind_of(command) == "inference" else TRAINING_FLAGS)


def configure(command: str | None = None, environ=None) -> dict[str, str]:
    """Puts the flags for `command` into XLA_FLAGS and returns what it added; a flag the user
    already set in XLA_FLAGS wins. Calling it again adds nothing. Must run before jax creates
    its backend (XLA reads XLA_FLAGS once); it does not import jax."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_SWITCH, "").lower() in ("off", "0", "false", "no"):
        return {}
    present = environ.get("XLA_FLAGS", "").split()
    names = {item.split("=", 1)[0].lstrip("-") for item in present}
    added = {name: value for name, value in flags_for(command).items() if name not in names}
    if added:
        environ["XLA_FLAGS"] = " ".join(present + [f"--{n}={v}" for n, v in added.items()])
    return added


def describe(command: str | None = None) -> str:
    """One line for logs and benchmark headers: the flags configure(command) adds."""
    flags = flags_for(command)
    if not flags:
        return "XLA defaults"
    return " ".join(f"--{name}={value}" for name, value in flags.items())
