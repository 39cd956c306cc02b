"""Dropout with hashed keep masks (`dropout_impl="hash"`, the default) or flax's own ("threefry").

Why a second mask generator: flax's nn.Dropout draws one Bernoulli per element through jax's
default PRNG (threefry2x32, ~100 integer ops per 32 random bits). On the 2-core CPU this costs
12-16 ns per mask element, 0.35-0.5 s of a MiniLM fine-tune step (48.8 M mask elements at batch
32 x 128) and the whole per-core gap to transformers PyTorch (experiments/bench/equal_shapes.md,
"Dropout masks"). Here each dropout site draws ONE 64-bit seed from its `dropout` rng stream (the
same make_rng call flax makes), and every element's 32 bits are a keyed integer hash of the
element's position in the full array: two rounds of a 32-bit mixer, ~15 integer ops, no state.

The mixer is "lowbias32" (xor-shift, multiply, xor-shift, multiply, xor-shift; the constants
are from C. Wellons' hash-prospector search, 2018, a bijection on uint32 with low avalanche
bias). The position goes through it with the first seed word added, then the second seed word
is xored in and it goes through again: with a single round, two seeds would only shift one
stream against the other (site B's mask = site A's mask displaced by s0' - s0 positions); the
second keyed round breaks that alignment. Statistically fine for dropout; not cryptography.

The counter is the flat index over the whole (global) shape, made from per-dimension iotas, so
a sharded step computes each shard's slice of the same mask: multi-device equals one device.
Up to 2^32 elements the index is one uint32 word; beyond that the leading dimensions' index
becomes a second word keyed into the second round, so no (lo, hi) pair repeats within a tensor.

Masks are deterministic in the rng, so a resumed run draws the masks the uninterrupted run
drew. Keep probability: bits >= round(rate * 2^32), i.e. 1 - rate to within 2^-33.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DROPOUT_IMPL_NAMES = ("hash", "threefry")  # config.py keeps its own copy (it imports no jax)

_TWO_32 = 2 ** 32
_GOLDEN = 0x9E3779B9  # odd, so i * _GOLDEN is a bijection on uint32 (spreads the high word)


def lowbias32(x: jax.Array) -> jax.Array:
    """A bijective 32-bit mixer (Wellons' lowbias32 constants): uint32 -> uint32, elementwise."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _flat_index(shape: Sequence[int], dims: range) -> jax.Array:
    """uint32 row-major index over `dims` of `shape`, broadcast to `shape` (caller keeps it
    below 2^32). Per-dimension iotas, so the partitioner slices it like any sharded operand."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for dim in reversed(dims):
        if shape[dim] > 1:
            index = index + lax.broadcasted_iota(jnp.uint32, shape, dim) * jnp.uint32(stride)
        stride *= shape[dim]
    return index


def position_words(shape: Sequence[int]) -> tuple[jax.Array, jax.Array | None]:
    """(lo, hi): the element's flat index as uint32 words, hi=None when the array has at most
    2^32 elements. Otherwise lo indexes the trailing dimensions (the longest suffix of at most
    2^32 elements) and hi the leading ones; a single dimension above 2^32 is refused."""
    shape = tuple(int(d) for d in shape)
    split = 0
    while math.prod(shape[split:]) > _TWO_32:  # lo's largest value is that product - 1
        split += 1
    if split and (split == len(shape) or math.prod(shape[:split]) > _TWO_32):
        raise ValueError(f"hashed dropout: array shape {shape} has a dimension (or leading "
                         f"dimensions) of more than 2^32 elements; its positions do not fit two "
                         f"uint32 words")
    lo = _flat_index(shape, range(split, len(shape)))
    hi = _flat_index(shape, range(split)) if split else None
    return lo, hi


def hashed_bits(seed: jax.Array, shape: Sequence[int]) -> jax.Array:
    """uint32 bits of `shape` from a (2,) uint32 seed: lowbias32(lowbias32(lo + s0) ^ key),
    key = s1 (+ hi * golden for arrays beyond 2^32 elements). For a fixed seed and hi the map
    from lo is a bijection: within an array of at most 2^32 elements no two elements get the
    same bits."""
    lo, hi = position_words(shape)
    key = seed[1] if hi is None else seed[1] + hi * jnp.uint32(_GOLDEN)
    return lowbias32(lowbias32(lo + seed[0]) ^ key)


def keep_threshold(rate: float) -> int:
    """Bits at or above this are kept: P(keep) = 1 - round(rate * 2^32) / 2^32."""
    return int(round(rate * _TWO_32))


class HashedDropout(nn.Module):
    """nn.Dropout's interface and arithmetic (inputs / (1 - rate) where kept, 0 elsewhere;
    identity and no rng drawn when deterministic or rate == 0), masks from hashed_bits."""

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or deterministic:
            return inputs
        threshold = keep_threshold(self.rate)
        if threshold >= _TWO_32:  # rate 1 (or within 2^-33 of it): nothing kept, no NaN grads
            return jnp.zeros_like(inputs)
        keep_prob = 1.0 - self.rate
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        seed = jax.random.bits(rng, (2,), jnp.uint32)  # the site's one draw from the PRNG
        mask_shape = list(inputs.shape)
        for dim in self.broadcast_dims:
            mask_shape[dim] = 1
        keep = hashed_bits(seed, mask_shape) >= jnp.uint32(threshold)
        keep = jnp.broadcast_to(keep, inputs.shape)
        return lax.select(keep, inputs / keep_prob, jnp.zeros_like(inputs))


def dropout_layer(rate: float, impl: str, *, deterministic: bool | None = None) -> nn.Module:
    """The dropout module a site of the model uses (config.dropout_impl picks it).

    "threefry" returns flax's nn.Dropout itself, under the auto-name it always had, so its masks
    are exactly those of runs made before this knob existed; "hash" returns HashedDropout.
    Create it inside a compact method, as any submodule."""
    if impl == "threefry":
        return nn.Dropout(rate, deterministic=deterministic)
    if impl == "hash":
        return HashedDropout(rate, deterministic=deterministic)
    raise ValueError(f"dropout_impl={impl!r} is not one of {', '.join(DROPOUT_IMPL_NAMES)}")
