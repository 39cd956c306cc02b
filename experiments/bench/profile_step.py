"""Where bertlab's MLM train step spends its time on this machine: timed parts and ablations.

The levers of the speed work are only worth keeping where the time is, so this times, in one
process and in interleaved rounds (load on a shared machine falls on every row alike):
  - the whole jitted train step (as experiments/bench/train_step.py runs it);
  - its parts compiled alone: the on-device masking, the forward pass (+ loss), forward +
    backward, and the optimizer update on gradients of the right shape;
  - the whole step with one thing changed: no dropout (what drawing the dropout bits and
    applying them costs), no dropout with jax.nn.dot_product_attention ("fused"), and three
    query/key/value matmuls instead of one (bertlab.models.attention.FUSED_QKV off).
Each row is the median of the timed calls after warm-up, in ms and as a share of the full step.

    .venv/bin/python experiments/bench/profile_step.py --variants tiny base
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bertlab.train import mesh as mesh_lib  # noqa: E402
from bertlab.train import optimizer as optimizer_lib  # noqa: E402
from bertlab.train import steps
from bertlab.train import state as train_state  # noqa: E402
from bertlab.models import BertForPreTraining, variant_config  # noqa: E402
from bertlab.models import attention  # noqa: E402
from finetune_infer import interleaved_medians  # noqa: E402
from train_step import VOCAB_SIZE, machine, make_mlm_step  # noqa: E402


def parts(variant: str, batch: int, seq: int, predictions: int, fused_qkv: bool = True,
          **overrides) -> dict[str, Callable[[], None]]:
    """Calls of the step (and, with no overrides, its parts), each traced and compiled here,
    under attention.FUSED_QKV = fused_qkv."""
    attention.FUSED_QKV, saved = fused_qkv, attention.FUSED_QKV
    try:
        calls = _parts(variant, batch, seq, predictions, **overrides)
        for call in calls.values():
            call()  # traced and compiled now, with the flag as asked
    finally:
        attention.FUSED_QKV = saved
    return calls


def _parts(variant: str, batch: int, seq: int, predictions: int, **overrides
           ) -> dict[str, Callable[[], None]]:
    mlm = make_mlm_step(variant, batch, seq, predictions, **overrides)
    model, mask_fn, train, holder, data, rng = (mlm.model, mlm.mask_fn, mlm.train, mlm.holder,
                                                mlm.batch, mlm.rng)
    full = mlm.step

    calls = {"step": full}
    if overrides:
        return calls

    mask = jax.jit(lambda b, r: steps.masked_inputs(b, r, mask_fn))
    inputs = mask(data, rng)

    def loss(p, inp, r):
        sums = steps.forward_sums(p, model.apply, inp, with_nsp=True, deterministic=False,
                                  dropout_rng=r)
        return sums["mlm_loss_sum"] / (sums["mlm_weight"] + 1e-5) + sums["nsp_loss_sum"] / batch

    forward = jax.jit(loss)
    grad = jax.jit(jax.grad(loss))
    grads = grad(holder["state"].params, inputs, rng)

    def update(s, g):
        return s.apply_gradients(grads=g)

    update = jax.jit(update, donate_argnums=0)

    def update_call():
        holder["state"] = update(holder["state"], grads)
        jax.block_until_ready(holder["state"].step)

    calls.update({
        "masking": lambda: jax.block_until_ready(mask(data, rng)),
        "forward + loss": lambda: jax.block_until_ready(forward(holder["state"].params, inputs, rng)),
        "forward + backward": lambda: jax.block_until_ready(grad(holder["state"].params, inputs, rng)),
        "optimizer update": update_call,
    })
    return calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timed", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    for variant in args.variants:
        calls = parts(variant, args.batch, args.seq, args.predictions)
        no_dropout = dict(hidden_dropout=0.0, attention_dropout=0.0)
        calls["step, no dropout"] = parts(variant, args.batch, args.seq, args.predictions,
                                          **no_dropout)["step"]
        calls["step, no dropout, fused attention"] = parts(
            variant, args.batch, args.seq, args.predictions, attention_kernel="fused",
            **no_dropout)["step"]
        calls["step, three Q/K/V matmuls (FUSED_QKV off)"] = parts(
            variant, args.batch, args.seq, args.predictions, fused_qkv=False)["step"]
        medians = interleaved_medians(calls, args.warmup, args.timed, args.rounds)
        print(f"\n{variant}: batch {args.batch}, seq {args.seq}\n\n| part | ms | share of step |\n"
              "|---|---:|---:|")
        for name, seconds in medians.items():
            print(f"| {name} | {1e3 * seconds:,.1f} | {seconds / medians['step']:.0%} |")
        del calls
    return 0


if __name__ == "__main__":
    sys.exit(main())
