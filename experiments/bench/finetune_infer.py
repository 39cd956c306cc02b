"""Fine-tuning step and inference throughput: bertlab against transformers' Flax BERT, one run.

Researchers fine-tune and score far more often than they pretrain, so these two loops matter as
much as the MLM step. Same architecture, sequence length 128 and batch for both sides:
  - fine-tune: BertForSequenceClassification (2 labels), dropout on, cross-entropy, AdamW with
    global-norm clipping at 1.0, the whole state donated to the jitted step (as transformers'
    Flax GLUE example does with its own state); sequences/s of one update;
  - inference: the same classifier's forward pass only (no dropout), jitted; sequences/s.

Steps of the two sides are interleaved in rounds (ours, then the peer's, repeated), so load
from other jobs on a shared machine falls on both alike; each figure is the median of every timed
step after warm-up, and the ratio column compares figures of the same run.

    .venv/bin/python experiments/bench/finetune_infer.py --variants tiny base

Prints markdown tables; --out appends them with the command and the machine to a markdown file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from bertlab.train import mesh as mesh_lib  # noqa: E402
from bertlab.train import optimizer as optimizer_lib  # noqa: E402
from bertlab.train import steps
from bertlab.train import state as train_state  # noqa: E402
from bertlab.models import BertForSequenceClassification, variant_config  # noqa: E402
from train_step import VOCAB_SIZE, machine, synthetic_batch  # noqa: E402

NUM_LABELS = 2


def interleaved_medians(calls: dict[str, Callable[[], None]], warmup: int, timed: int,
                        rounds: int) -> dict[str, float]:
    """Median seconds per call of each blocking `call()`, the sides taking turns in `rounds`
    rounds of timed // rounds calls each, after `warmup` untimed calls of each."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    per_round = max(1, timed // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def classifier_batch(batch: int, seq: int, seed: int = 0) -> dict:
    data = synthetic_batch(batch, seq, VOCAB_SIZE, seed)
    labels = np.random.default_rng(seed + 1).integers(0, NUM_LABELS, size=(batch,), dtype=np.int32)
    return {"token_ids": data["token_ids"], "segment_ids": data["segment_ids"],
            "attention_mask": data["attention_mask"], "labels": labels,
            "example_weights": np.ones((batch,), np.float32)}


def optimizer() -> tuple[optax.GradientTransformation, Callable]:
    return optimizer_lib.make_optimizer("adamw", lr=2e-5, warmup_steps=10, num_steps=1000,
                                        weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                        clip_norm=1.0)


def bertlab_calls(variant: str, batch: int, infer_batches: list[int], seq: int, dtype: str
                  ) -> dict[str, Callable[[], None]]:
    """{"train": one fine-tuning update, "infer<B>": one forward pass of B sequences}."""
    config = variant_config(variant, vocab_size=VOCAB_SIZE, dtype=dtype)
    model = BertForSequenceClassification(config, num_labels=NUM_LABELS)
    mesh = mesh_lib.data_mesh()
    ids = jnp.zeros((1, seq), jnp.int32)
    params = jax.jit(lambda key: model.init({"params": key}, ids, ids, jnp.ones_like(ids))["params"],
                     out_shardings=mesh_lib.replicated(mesh))(jax.random.PRNGKey(0))
    tx, schedule = optimizer()
    state = train_state.create_train_state(model, tx, params, mesh=mesh)
    train = steps.jit_classify_train_step(schedule=schedule, regression=False, frozen=(), mesh=mesh)
    data = mesh_lib.global_batch(classifier_batch(batch, seq), mesh)
    holder = {"state": state}
    rng = jax.random.PRNGKey(1)

    def train_call():
        holder["state"], metrics = train(holder["state"], data, rng)
        jax.block_until_ready(metrics["loss"])

    forward = jax.jit(lambda p, b: model.apply({"params": p}, b["token_ids"], b["segment_ids"],
                                               b["attention_mask"], deterministic=True))
    calls = {"train": train_call}
    for size in infer_batches:
        infer_data = mesh_lib.global_batch(classifier_batch(size, seq, seed=2), mesh)
        calls[f"infer{size}"] = (lambda d=infer_data: jax.block_until_ready(
            forward(holder["state"].params, d)))
    return calls


def hf_flax_calls(variant: str, batch: int, infer_batches: list[int], seq: int
                  ) -> dict[str, Callable[[], None]] | None:
    """The same loops written the way transformers' Flax examples write them."""
    try:
        from transformers import BertConfig as HFConfig, FlaxBertForSequenceClassification
    except Exception:  # transformers >= 5 has no Flax BERT
        return None
    ours = variant_config(variant, vocab_size=VOCAB_SIZE)
    hf_config = HFConfig(vocab_size=VOCAB_SIZE, hidden_size=ours.hidden_size,
                         num_hidden_layers=ours.num_layers, num_attention_heads=ours.num_heads,
                         intermediate_size=ours.intermediate_size, num_labels=NUM_LABELS)
    model = FlaxBertForSequenceClassification(hf_config, seed=0, input_shape=(1, seq))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(optax.linear_schedule(0.0, 2e-5, 10), eps=1e-6,
                                 weight_decay=0.01))
    data = classifier_batch(batch, seq)
    data = {key: jnp.asarray(value) for key, value in data.items()}

    def train_step(params, opt_state, dropout_rng, batch):
        def loss_fn(p):
            logits = model(batch["token_ids"], batch["attention_mask"], batch["segment_ids"],
                           params=p, dropout_rng=dropout_rng, train=True).logits
            onehot = jax.nn.one_hot(batch["labels"], NUM_LABELS)
            return optax.softmax_cross_entropy(logits, onehot).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train = jax.jit(train_step, donate_argnums=(0, 1))
    holder = {"p": model.params, "o": tx.init(model.params)}
    holder["p"] = jax.tree_util.tree_map(jnp.array, holder["p"])  # own buffers, safe to donate
    key = jax.random.PRNGKey(0)

    def train_call():
        holder["p"], holder["o"], loss = train(holder["p"], holder["o"], key, data)
        jax.block_until_ready(loss)

    forward = jax.jit(lambda p, b: model(b["token_ids"], b["attention_mask"], b["segment_ids"],
                                         params=p, train=False).logits)
    calls = {"train": train_call}
    for size in infer_batches:
        infer_data = {k: jnp.asarray(v) for k, v in classifier_batch(size, seq, seed=2).items()}
        calls[f"infer{size}"] = (lambda d=infer_data: jax.block_until_ready(
            forward(holder["p"], d)))
    return calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batch", type=int, default=32, help="fine-tuning batch")
    parser.add_argument("--infer-batches", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timed", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2,
                        help="the timed steps are split into this many interleaved rounds")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    header = ("| variant | loop | batch | bertlab seq/s | transformers Flax seq/s | × Flax |\n"
              "|---|---|---:|---:|---:|---:|")
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []
    for variant in args.variants:
        ours = bertlab_calls(variant, args.batch, args.infer_batches, args.seq, args.dtype)
        peer = (hf_flax_calls(variant, args.batch, args.infer_batches, args.seq)
                if args.dtype == "float32" else None)
        for name in ours:
            calls = {"bertlab": ours[name]}
            if peer:
                calls["flax"] = peer[name]
            medians = interleaved_medians(calls, args.warmup, args.timed, args.rounds)
            size = args.batch if name == "train" else int(name[len("infer"):])
            rate = size / medians["bertlab"]
            peer_rate = size / medians["flax"] if "flax" in medians else None
            loop = "fine-tune step" if name == "train" else "inference"
            row = (f"| {variant} | {loop} | {size} | {rate:,.1f} | "
                   f"{f'{peer_rate:,.1f}' if peer_rate else '—'} | "
                   f"{f'{rate / peer_rate:.2f}×' if peer_rate else '—'} |")
            rows.append(row)
            print(row, flush=True)
        del ours, peer
    table = header + "\n" + "\n".join(rows)
    print("\n" + table)
    if args.out:
        from markdown_out import append_table
        append_table(args.out, "finetune_infer.py", argv,
                     f"Fine-tuning step and inference, seq {args.seq}, {args.dtype} — "
                     f"{machine()}, load average {os.getloadavg()[0]:.1f} at the end", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
