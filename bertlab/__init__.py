"""bertlab: BERT pretraining, fine-tuning and ablations on JAX/Flax.

Importing the package is cheap on purpose: jax, flax and tensorflow are imported by the
modules that need them, so `bertlab --help` starts fast.
"""

__version__ = "0.1.0"
