"""Where compile time goes: bertlab's MLM train step against transformers' Flax BERT, part by part.

startup.py found our train step compiling in about twice the peer's time. This script takes the
step apart: each row compiles one version of a step in a fresh process (so no in-process cache
or warmed-up LLVM helps a later row), and reports trace + lowering seconds (Python, jaxpr,
StableHLO), XLA compile seconds, and the size of the optimised HLO module (instructions and
fusions), which is what XLA's CPU back end spends its time on. Versions of our step:
  - full: what `bertlab pretrain` compiles (on-device masking, MLM + NSP heads, dropout, AdamW
    with clipping, metrics);
  - the same with the masking given as an input (no top_k / sort / scatter in the step);
  - the same without dropout (all dropout rates 0: no random-bit generation in the step);
  - masking given, no dropout, no NSP head: the closest to the peer's step;
and the peer's: FlaxBertForMaskedLM + optax AdamW with clipping, with and without dropout.

    .venv/bin/python experiments/bench/compile_time.py --variant tiny --repeats 2

Prints a markdown table; --out appends it with the command and the machine to a markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# row name -> (side, options)
ROWS = {
    "bertlab: full step": ("bertlab", {}),
    "bertlab: masking given": ("bertlab", {"given_mask": True}),
    "bertlab: no dropout": ("bertlab", {"no_dropout": True}),
    "bertlab: masking given, no dropout, no NSP": ("bertlab", {"given_mask": True,
                                                               "no_dropout": True,
                                                               "no_nsp": True}),
    "transformers Flax: full step": ("transformers", {}),
    "transformers Flax: no dropout": ("transformers", {"no_dropout": True}),
}


def hlo_stats(compiled) -> dict:
    """Instructions and fusions of the optimised HLO module."""
    text = compiled.as_text()
    lines = [line.strip() for line in text.splitlines()]
    instructions = sum(1 for line in lines if " = " in line and not line.startswith("//"))
    fusions = sum(1 for line in lines if line.startswith("%fusion") or " fusion(" in line)
    return {"instructions": instructions, "fusions": fusions}


def timed_compile(jitted, *args) -> dict:
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    return {"lower": lowered_at - start, "compile": done - lowered_at, **hlo_stats(compiled)}


def child_bertlab(variant: str, batch: int, seq: int, predictions: int, opts: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, REPO)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_step import VOCAB_SIZE, synthetic_batch, synthetic_vocab

    from bertlab import mesh as mesh_lib, optimizer as optimizer_lib, steps, train_state
    from bertlab.models import BertForPreTraining, variant_config

    dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0} if opts.get("no_dropout") else {}
    config = variant_config(variant, vocab_size=VOCAB_SIZE, **dropout)
    with_nsp = not opts.get("no_nsp")
    model = BertForPreTraining(config, with_nsp=with_nsp)
    mesh = mesh_lib.data_mesh()
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=1e-4, warmup_steps=10, num_steps=100,
                                                weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                                clip_norm=1.0)
    params = train_state.init_params(model, jax.random.PRNGKey(0), seq_len=seq,
                                     num_predictions=predictions, mesh=mesh)
    state = train_state.create_train_state(model, tx, params, mesh=mesh)
    if opts.get("given_mask"):
        positions = jnp.asarray(np.tile(np.arange(1, predictions + 1, dtype=np.int32),
                                        (batch, 1)))  # (B, P)

        def mask_fn(rng, token_ids, attention_mask):
            del rng, attention_mask
            return {"input_ids": token_ids, "masked_positions": positions,
                    "masked_labels": jnp.take_along_axis(token_ids, positions, axis=1),
                    "masked_weights": jnp.ones(positions.shape, jnp.float32)}
    else:
        mask_fn = steps.make_mask_fn(synthetic_vocab(), rate=0.15, max_predictions=predictions,
                                     whole_word=False)
    train = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                 with_nsp=with_nsp, mesh=mesh)
    data = mesh_lib.global_batch(synthetic_batch(batch, seq, VOCAB_SIZE), mesh)
    return timed_compile(train, state, data, jax.random.PRNGKey(1))


def child_transformers(variant: str, batch: int, seq: int, predictions: int, opts: dict) -> dict:
    del predictions
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from transformers import BertConfig, FlaxBertForMaskedLM

    sys.path.insert(0, REPO)
    from bertlab.models.config import VARIANTS

    size = VARIANTS[variant]
    drop = 0.0 if opts.get("no_dropout") else 0.1
    hf_config = BertConfig(vocab_size=30522, hidden_size=size["hidden_size"],
                           num_hidden_layers=size["num_layers"],
                           num_attention_heads=size["num_heads"],
                           intermediate_size=size["intermediate_size"],
                           hidden_dropout_prob=drop, attention_probs_dropout_prob=drop)
    model = FlaxBertForMaskedLM(hf_config, seed=0, input_shape=(1, seq))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-4, eps=1e-6, weight_decay=0.01))
    params = model.params
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 30522, (batch, seq), dtype=np.int32))
    labels = jnp.where(jnp.asarray(rng.random((batch, seq)) < 0.15), ids, -100)
    mask = jnp.ones((batch, seq), jnp.int32)

    def step(params, opt_state, dropout_rng):
        def loss_fn(p):
            logits = model(ids, mask, jnp.zeros_like(ids), params=p, dropout_rng=dropout_rng,
                           train=True).logits
            weight = labels >= 0
            logp = jax.nn.log_softmax(logits)
            nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
            return jnp.sum(nll * weight) / jnp.maximum(weight.sum(), 1)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return timed_compile(jax.jit(step, donate_argnums=(0, 1)), params, opt_state,
                         jax.random.PRNGKey(1))


CHILDREN = {"bertlab": child_bertlab, "transformers": child_transformers}


def run_row(name: str, args) -> dict:
    side, opts = ROWS[name]
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name,
                          "--variant", args.variant, "--batch", str(args.batch),
                          "--seq", str(args.seq), "--predictions", str(args.predictions)],
                         capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=sorted(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    if args.child:
        side, opts = ROWS[args.child]
        result = CHILDREN[side](args.variant, args.batch, args.seq, args.predictions, opts)
        print(json.dumps(result))
        return 0

    runs = {name: [] for name in ROWS}
    for _ in range(args.repeats):  # rows in turns, so load falls on all alike
        for name in ROWS:
            runs[name].append(run_row(name, args))
            print(f"{name}: {runs[name][-1]}", file=sys.stderr)
    peer = statistics.median(r["lower"] + r["compile"] for r in runs["transformers Flax: full step"])
    lines = ["| step | trace + lower s | XLA compile s | total s | × peer's full step | "
             "HLO instructions | fusions |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, results in runs.items():
        lower = statistics.median(r["lower"] for r in results)
        compile_s = statistics.median(r["compile"] for r in results)
        total = statistics.median(r["lower"] + r["compile"] for r in results)
        lines.append(f"| {name} | {lower:.2f} | {compile_s:.2f} | {total:.2f} | "
                     f"{total / peer:.2f}× | {results[0]['instructions']:,} | "
                     f"{results[0]['fusions']:,} |")
    load = os.getloadavg()[0]
    table = (f"{args.variant}, batch {args.batch}, seq {args.seq}; median of {args.repeats} "
             f"fresh processes per row; load average {load:.1f} at the end.\n\n" + "\n".join(lines))
    print(table)
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from markdown_out import append_table
        append_table(args.out, "compile_time.py", argv, f"Compile time, {args.variant}", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
