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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import add_shape_arguments  # noqa: E402  (no jax inside)

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
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_step import make_mlm_step

    mask_fn = None
    if opts.get("given_mask"):
        positions = jnp.asarray(np.tile(np.arange(1, predictions + 1, dtype=np.int32),
                                        (batch, 1)))  # (B, P)

        def mask_fn(rng, token_ids, attention_mask):
            del rng, attention_mask
            return {"input_ids": token_ids, "masked_positions": positions,
                    "masked_labels": jnp.take_along_axis(token_ids, positions, axis=1),
                    "masked_weights": jnp.ones(positions.shape, jnp.float32)}
    dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0} if opts.get("no_dropout") else {}
    mlm = make_mlm_step(variant, batch, seq, predictions, mask_fn=mask_fn,
                        with_nsp=not opts.get("no_nsp"), **dropout)
    return timed_compile(mlm.train, mlm.holder["state"], mlm.batch, mlm.rng)


def child_transformers(variant: str, batch: int, seq: int, predictions: int, opts: dict) -> dict:
    del predictions  # the peer scores every labelled position
    import jax

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import flax_mlm_step

    step, params, opt_state = flax_mlm_step(variant, batch, seq, 30522,
                                            dropout=0.0 if opts.get("no_dropout") else 0.1)
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
    add_shape_arguments(parser)
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
