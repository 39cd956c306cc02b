"""What drawing dropout masks costs per fine-tune step, by PRNG implementation.

A MiniLM-shaped fine-tune step (L6/H384/12 heads, batch 32 x 128) draws one mask per dropout
site: the attention weights (B, N, T, T) of five full layers plus the [CLS]-only last layer,
and (B, T, H) after the embeddings and twice per layer. This times drawing exactly those masks
(jax.random.bernoulli, as flax's nn.Dropout draws them), jitted, with each key implementation,
interleaved in one process; the median of the timed calls.

    .venv/bin/python experiments/bench/dropout_bits.py --reps 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")


def mask_shapes(batch: int, seq: int, hidden: int, heads: int, layers: int) -> list[tuple]:
    shapes = [(batch, seq, hidden)]  # embeddings
    for layer in range(layers):
        queries = 1 if layer == layers - 1 else seq  # the classifier's last layer: [CLS] only
        shapes += [(batch, heads, queries, seq), (batch, queries, hidden), (batch, queries, hidden)]
    return shapes


def draw_all(key, shapes):
    """One bernoulli(0.9) mask per shape, folded into a scalar so nothing is left unused."""
    total = jnp.zeros((), jnp.int32)
    for index, shape in enumerate(shapes):
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), 0.9, shape)
        total = total + jnp.sum(keep, dtype=jnp.int32)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    shapes = mask_shapes(args.batch, 128, 384, 12, 6)
    count = sum(int(jnp.prod(jnp.array(s))) for s in shapes)
    calls = {}
    for impl in IMPLS:
        key = jax.random.key(0, impl=impl)
        fn = jax.jit(draw_all, static_argnums=1)
        fn(key, tuple(shapes)).block_until_ready()
        calls[impl] = lambda fn=fn, key=key: fn(key, tuple(shapes)).block_until_ready()
    times = {impl: [] for impl in calls}
    for rep in range(args.reps):
        for impl, call in calls.items():
            start = time.perf_counter()
            call()
            times[impl].append(time.perf_counter() - start)
    print(f"{count / 1e6:.1f} M mask elements per MiniLM step (batch {args.batch}); "
          f"load {os.getloadavg()[0]:.1f}\n\n| key implementation | ms per step, median | min | ns per element |\n|---|---:|---:|---:|")
    for impl, values in times.items():
        median = statistics.median(values)
        print(f"| {impl} | {1e3 * median:,.0f} | {1e3 * min(values):,.0f} | {1e9 * median / count:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
