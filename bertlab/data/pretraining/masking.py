"""Dynamic masked-LM corruption, applied per step inside the jitted train step.

The original BERT baked one masking per example into its TFRecords (times dupe_factor copies).
Masking here instead draws a fresh corruption from the step's rng, so every epoch sees new masks
and the files stay a quarter of the size. The rules follow google-research/bert
create_pretraining_data.py:

* the number of predictions per sequence is min(P, max(1, round(rate * real_tokens))), where
  real_tokens counts [CLS]/[SEP] too, with Python's round (half to even), as the original;
* special tokens and padding are never chosen; fewer candidates than that number leave the extra
  slots as padding (weight 0);
* each chosen token becomes [MASK] with probability 0.8, a random token with 0.1 and stays as
  it is with 0.1. Unlike the original, a random replacement is never a special token
  ([CLS], [SEP], [PAD], [MASK], [UNK]): those would teach the model structure markers in the middle
  of text. Every other id in [0, vocab_size) is equally likely, [unused*] entries included;
* whole-word masking treats a token plus its following `##` continuations as one word and masks
  all its pieces or none. Words are visited in random order and one is taken when it still fits
  the remaining budget; the original scans every word once in that order, we scan the shuffled
  order three times with prefix sums (enough to fill the budget in practice, no sequential loop).
  A `##` piece right after a special token starts its own word (the original would glue it to the
  word before the [SEP]).

Everything is static-shaped: random scores + sort/top_k over positions, no Python loop over
tokens, so the function traces once per (batch shape, options).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MASK_PROB = 0.8  # chosen tokens replaced by [MASK]
RANDOM_PROB = 0.1  # chosen tokens replaced by a random non-special token; the rest stay
WHOLE_WORD_PASSES = 3


def continuation_table(vocab) -> np.ndarray:
    """(V,) bool: True where the vocabulary entry is a `##` word continuation."""
    return np.fromiter((token.startswith("##") for token in vocab.tokens), dtype=bool,
                       count=len(vocab.tokens))


def num_predictions_table(max_len: int, rate: float, max_predictions: int) -> np.ndarray:
    """(max_len + 1,) int32: predictions per sequence for each count of real tokens.

    Built on the host with Python's round so the counts match the original to the last tie
    (float32 arithmetic on the device would round 0.15 * 30 differently)."""
    return np.array([min(max_predictions, max(1, int(round(n * rate)))) for n in range(max_len + 1)],
                    dtype=np.int32)


def _sorted_specials(special_ids: Sequence[int] | jax.Array) -> jax.Array:
    if isinstance(special_ids, (jax.Array, np.ndarray)):
        return jnp.sort(jnp.asarray(special_ids, jnp.int32).reshape(-1))  # caller keeps them unique
    return jnp.asarray(sorted(set(int(i) for i in special_ids)), jnp.int32)


def random_non_special_ids(rng, shape, vocab_size: int, sorted_specials: jax.Array) -> jax.Array:
    """Uniform over the ids in [0, vocab_size) that are not special.

    Draws r in [0, V - S) and maps it to the r-th non-special id: r plus the number of specials
    s_j (sorted) with s_j - j <= r, since s_j - j non-special ids lie below s_j."""
    num_special = sorted_specials.shape[0]
    r = jax.random.randint(rng, shape, 0, vocab_size - num_special, dtype=jnp.int32)
    below = sorted_specials - jnp.arange(num_special, dtype=jnp.int32)  # (S,)
    return r + jnp.sum(below <= r[..., None], axis=-1, dtype=jnp.int32)


def prediction_counts(lengths, rate: float, max_predictions: int) -> np.ndarray:
    """(n,) int: predictions each example of `lengths` real tokens asks for (the padded rule).
    Packing keeps each packed row's sum of these <= max_predictions (packing.first_fit_
    decreasing's costs), so a packed row needs no more masked-position slots than a padded one:
    P slots per row whatever the layout, and no prediction of the padded batch is dropped."""
    lengths = np.asarray(lengths, np.int64)
    table = num_predictions_table(int(lengths.max(initial=0)), rate, max_predictions)
    return table[lengths]


def masking_draws(rng, shape, vocab_size: int, sorted_specials: jax.Array):
    """The random numbers of one masking, one per token of a (B, T) grid laid out as the padded
    batch (row = example, column = its position): word scores, action draws and replacement ids.
    A packed batch gathers its tokens' draws from this grid, so every example is masked as in
    the padded batch whatever row and offset it was packed at (and whatever the device count)."""
    rng_words, rng_action, rng_random = jax.random.split(rng, 3)
    return (jax.random.uniform(rng_words, shape), jax.random.uniform(rng_action, shape),
            random_non_special_ids(rng_random, shape, vocab_size, sorted_specials))


def _choose_words(scores, word_start, word_len, example_of, budget, passes: int) -> jax.Array:
    """(B, T) bool at word starts: per example, a random set of whole words with total length
    within that example's budget. example_of (B, T): the position of each token's example start;
    budget (B, T): each example's count at its start position (0 elsewhere).

    Words are sorted by (example, random score), ties by position, so each example's words form
    a contiguous run in random order; prefix sums restart at each run (segmented cumsum)."""
    batch, length = word_start.shape
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    group = jnp.where(word_start, example_of, length)  # non-starts sort last
    sorted_group, _, order = jax.lax.sort((group, scores, positions), dimension=1, num_keys=2,
                                          is_stable=True)  # (B, T) each
    sorted_start = jnp.take_along_axis(word_start, order, axis=1)
    sorted_len = jnp.take_along_axis(word_len, order, axis=1)
    slot = jnp.minimum(sorted_group, length - 1)  # where each sorted word's budget lives
    first = jnp.concatenate([jnp.ones((batch, 1), bool),
                             sorted_group[:, 1:] != sorted_group[:, :-1]], axis=1)
    rows = jnp.arange(batch)[:, None]
    chosen = jnp.zeros_like(sorted_start)
    remaining = budget  # (B, T) at example starts
    for _ in range(passes):  # static, tiny: a handful of prefix-sum sweeps, not a token loop
        left = jnp.take_along_axis(remaining, slot, axis=1)  # (B, T) the word's example's budget
        eligible = sorted_start & ~chosen & (sorted_len <= left)
        value = jnp.where(eligible, sorted_len, 0)
        cumulative = jnp.cumsum(value, axis=1)
        # cumulative - value never decreases, so its running max at run starts is each run's base
        base = jax.lax.cummax(jnp.where(first, cumulative - value, 0), axis=1)
        take = eligible & (cumulative - base <= left)
        chosen = chosen | take
        remaining = remaining - jnp.zeros_like(remaining).at[rows, slot].add(
            jnp.where(take, sorted_len, 0))
    return jnp.zeros_like(chosen).at[rows, order].set(chosen)  # back to positions


def mask_tokens(rng, token_ids, attention_mask, *, mask_id: int, vocab_size: int,
                special_ids: Sequence[int] | jax.Array, rate: float = 0.15,
                max_predictions: int = 20, whole_word: bool = False,
                continuation_table: jax.Array | None = None,
                example_ids: jax.Array | None = None, positions: jax.Array | None = None,
                draw_rows: jax.Array | None = None, num_draw_rows: int | None = None) -> dict:
    """Corrupts a batch for masked-LM training; see the module docstring for the rules.

    token_ids, attention_mask: (B, T). rate and max_predictions must be Python numbers (they fix
    shapes and the count table); special_ids may be a tuple or a unique int array.
    Returns input_ids (B, T) int32, masked_positions / masked_labels (B, P) int32 in ascending
    position order, masked_weights (B, P) float32, P = max_predictions; unused slots hold
    position 0, label 0, weight 0 (as the original's padding).

    Packed rows (bertlab.data.packing): example_ids (B, T) (0 = padding, equal ids = one
    example, contiguous) and positions (B, T) (offset in the example). Each example then gets
    its own count min(P, max(1, round(rate * its real tokens))) and its own words (whole words
    never cross an example), and its random draws come from row draw_rows (default
    example_ids - 1), column positions, of a (num_draw_rows, T) grid drawn as the padded batch
    draws its (B, T) one: an example packed anywhere is masked exactly as in the padded batch
    (tested). A packed row has the same P slots, so the packer must keep the sum of its
    examples' counts <= P (prediction_counts); past P, the last positions would be dropped."""
    if whole_word and continuation_table is None:
        raise ValueError("whole_word=True needs continuation_table (see continuation_table(vocab))")
    token_ids = jnp.asarray(token_ids, jnp.int32)
    batch, length = token_ids.shape  # (B, T)
    if not 0 < max_predictions <= length:
        raise ValueError(f"max_predictions={max_predictions} must be in [1, sequence length {length}]")
    real = jnp.asarray(attention_mask).astype(bool)
    specials = _sorted_specials(special_ids)
    index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    rows = jnp.arange(batch)[:, None]
    packed = example_ids is not None
    if packed:
        if positions is None or num_draw_rows is None:
            raise ValueError("mask_tokens: packed rows (example_ids) need positions and "
                             "num_draw_rows")
        example_ids = jnp.asarray(example_ids, jnp.int32)
        if draw_rows is None:
            draw_rows = jnp.maximum(example_ids - 1, 0)
        grid = masking_draws(rng, (num_draw_rows, length), vocab_size, specials)
        where = (jnp.clip(draw_rows, 0, num_draw_rows - 1), jnp.clip(positions, 0, length - 1))
        scores, action, random_ids = (g[where] for g in grid)  # (B, T) each
    else:
        example_ids = real.astype(jnp.int32)  # one example per row
        scores, action, random_ids = masking_draws(rng, (batch, length), vocab_size, specials)

    previous = jnp.pad(example_ids[:, :-1], ((0, 0), (1, 0)))  # (B, T) the id one to the left
    same_example = (example_ids == previous) & (example_ids > 0)
    example_start = real & ~same_example
    example_of = jax.lax.cummax(jnp.where(example_start, index, 0), axis=1)  # (B, T)
    example_len = jnp.zeros((batch, length), jnp.int32).at[rows, example_of].add(
        real.astype(jnp.int32))  # (B, T), non-zero at example starts only

    is_special = jnp.any(token_ids[..., None] == specials, axis=-1)  # (B, T, S) -> (B, T)
    candidate = real & ~is_special
    if whole_word:
        is_continuation = jnp.asarray(continuation_table, bool)[token_ids]
        prev_candidate = jnp.pad(candidate[:, :-1], ((0, 0), (1, 0))) & same_example
        word_start = candidate & ~(is_continuation & prev_candidate)
    else:
        word_start = candidate
    # Every candidate belongs to the word that starts at the last start at or before it.
    word_of = jax.lax.cummax(jnp.where(word_start, index, 0), axis=1)  # (B, T)
    word_len = jnp.zeros((batch, length), jnp.int32).at[rows, word_of].add(
        candidate.astype(jnp.int32))  # (B, T), non-zero at word starts only

    counts = jnp.asarray(num_predictions_table(length, rate, max_predictions))
    budget = jnp.where(example_start, counts[example_len], 0)  # (B, T) at example starts
    chosen_start = _choose_words(scores, word_start, word_len, example_of, budget,
                                 WHOLE_WORD_PASSES if whole_word else 1)
    selected = candidate & jnp.take_along_axis(chosen_start, word_of, axis=1)  # (B, T)

    to_mask = selected & (action < MASK_PROB)
    to_random = selected & (action >= MASK_PROB) & (action < MASK_PROB + RANDOM_PROB)
    input_ids = jnp.where(to_mask, jnp.int32(mask_id), jnp.where(to_random, random_ids, token_ids))

    # Largest key = smallest selected position, so top_k lists positions in ascending order.
    key = jnp.where(selected, length - index, 0)
    top, masked_positions = jax.lax.top_k(key, max_predictions)  # (B, P)
    valid = top > 0
    masked_positions = jnp.where(valid, masked_positions, 0).astype(jnp.int32)
    masked_labels = jnp.where(valid, jnp.take_along_axis(token_ids, masked_positions, axis=1), 0)
    return {
        "input_ids": input_ids,
        "masked_positions": masked_positions,
        "masked_labels": masked_labels.astype(jnp.int32),
        "masked_weights": valid.astype(jnp.float32),
    }
