"""Time to the first finished training step: `bertlab pretrain` against transformers' Flax BERT.

A short experiment (a smoke test, a sweep arm, a debugging rerun) is dominated by start-up and
compilation, so this is what a researcher waits for most often. Every measurement is a fresh
process, timed from its launch:
  - `bertlab pretrain` itself (the CLI, on a dataset prepared beforehand, train.num_steps=1):
    launch -> the first train record in metrics.jsonl (its wall-clock "time" field); once with
    the peak FLOP/s measured at start-up (train.peak_flops=0, the default) and once given, both
    with an empty compilation cache, then the latter again with the cache it left (a relaunch:
    another seed, a resumed run);
  - the same work split into phases by a child of this script (interpreter, imports, parameter
    and optimizer init, compilation of the train step, the first step), for bertlab's modules and
    for a minimal transformers script (FlaxBertForMaskedLM + optax AdamW, jit, one step) on the
    same model size, batch and sequence length.
The phase children run in turns (bertlab, transformers, bertlab, ...) and each figure is the
median over --repeats runs, so load on a shared machine falls on both alike.

    .venv/bin/python experiments/bench/startup.py --variant tiny --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers import add_shape_arguments  # noqa: E402  (no jax inside)
DEFAULT_VOCAB = os.path.join(REPO, "..", "shared", "data", "vocab", "bert-base-uncased-vocab.txt")
PHASES = ("interpreter", "imports", "init", "compile", "first step")


# ------------------------------------------------------------------------------------------
# Children: each prints one JSON line of wall-clock marks (time.time()) after the phases.
# ------------------------------------------------------------------------------------------

def child_bertlab(variant: str, batch: int, seq: int, predictions: int, vocab_path: str) -> dict:
    marks = {"interpreter": time.time()}
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bertlab.train import pretrain  # noqa: F401  (what `bertlab pretrain` imports eagerly)
    from bertlab.train import mesh as mesh_lib
    from bertlab.train import optimizer as optimizer_lib
    from bertlab.train import steps
    from bertlab.train import state as train_state
    from bertlab.models import BertForPreTraining, variant_config
    from bertlab.text.tokenizer import load_vocab
    marks["imports"] = time.time()

    vocab = load_vocab(vocab_path)
    config = variant_config(variant, vocab_size=len(vocab))
    model = BertForPreTraining(config, with_nsp=True)
    mesh = mesh_lib.data_mesh()
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=1e-4, warmup_steps=10, num_steps=100,
                                                weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                                clip_norm=1.0)
    params = train_state.init_params(model, jax.random.PRNGKey(0), seq_len=seq,
                                     num_predictions=predictions, mesh=mesh)
    state = train_state.create_train_state(model, tx, params, mesh=mesh)
    jax.block_until_ready(state.opt_state)
    marks["init"] = time.time()

    mask_fn = steps.make_mask_fn(vocab, rate=0.15, max_predictions=predictions, whole_word=False)
    train = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                 with_nsp=True, mesh=mesh)
    rng = np.random.default_rng(0)
    local = {"token_ids": rng.integers(5, len(vocab), (batch, seq), dtype=np.int32),
             "segment_ids": np.zeros((batch, seq), np.int32),
             "attention_mask": np.ones((batch, seq), np.int32),
             "nsp_labels": np.zeros((batch,), np.int32)}
    data = mesh_lib.global_batch(local, mesh)
    compiled = train.lower(state, data, jax.random.PRNGKey(1)).compile()
    marks["compile"] = time.time()

    state, metrics = compiled(state, data, jax.random.PRNGKey(1))
    float(jax.device_get(metrics["loss"]))
    marks["first step"] = time.time()
    del jnp
    return marks


def child_hf_flax(variant: str, batch: int, seq: int, predictions: int, vocab_path: str) -> dict:
    del predictions  # the peer scores every labelled position
    marks = {"interpreter": time.time()}
    import jax
    import optax  # noqa: F401
    import transformers  # noqa: F401
    marks["imports"] = time.time()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers import flax_mlm_step

    with open(vocab_path, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    step, params, opt_state = flax_mlm_step(variant, batch, seq, vocab_size)
    marks["init"] = time.time()

    compiled = jax.jit(step).lower(params, opt_state, jax.random.PRNGKey(1)).compile()
    marks["compile"] = time.time()
    params, opt_state, loss = compiled(params, opt_state, jax.random.PRNGKey(1))
    float(loss)
    marks["first step"] = time.time()
    return marks


CHILDREN = {"bertlab": child_bertlab, "transformers": child_hf_flax}


# ------------------------------------------------------------------------------------------
# Parent.
# ------------------------------------------------------------------------------------------

def run_child(kind: str, args) -> dict[str, float]:
    """Seconds spent in each phase (the first measured from the launch) and their total."""
    launched = time.time()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                          "--variant", args.variant, "--batch", str(args.batch), "--seq",
                          str(args.seq), "--predictions", str(args.predictions),
                          "--vocab", args.vocab], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    seconds, previous = {}, launched
    for phase in PHASES:
        seconds[phase] = marks[phase] - previous
        previous = marks[phase]
    seconds["total"] = marks["first step"] - launched
    return seconds


def run_cli(args, dataset: str, peak_flops: float, cache_dir: str) -> float:
    """Seconds from launching `bertlab pretrain` to its first train record in metrics.jsonl, with
    its compilation cache in cache_dir (empty: it compiles; primed: it loads)."""
    with tempfile.TemporaryDirectory(dir=args.scratch) as workdir:
        command = [os.path.join(REPO, ".venv", "bin", "bertlab"), "pretrain", "--config",
                   f"configs/pretrain.py:{args.variant}", "--workdir", workdir,
                   f"--config.data.prepared={dataset}", f"--config.data.vocab={args.vocab}",
                   f"--config.data.batch_size={args.batch}",
                   f"--config.data.max_predictions={args.predictions}",
                   "--config.optimizer.name=adamw", "--config.optimizer.warmup_steps=1",
                   "--config.train.num_steps=1", "--config.train.log_every=1",
                   "--config.train.eval_batches=0", f"--config.train.peak_flops={peak_flops}"]
        launched = time.time()
        out = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                             env={**os.environ, "BERTLAB_COMPILATION_CACHE": cache_dir})
        if out.returncode:
            raise RuntimeError(f"bertlab pretrain failed:\n{out.stderr[-3000:]}")
        with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
            first = next(json.loads(line) for line in f if '"train"' in line)
        return first["time"] - launched


def prepare_dataset(args) -> str:
    dataset = os.path.join(args.scratch, f"startup-data-{args.seq}")
    if not os.path.exists(os.path.join(dataset, "meta.json")):
        subprocess.run([os.path.join(REPO, ".venv", "bin", "bertlab"), "create-data", "--corpus",
                        "default", "--vocab", args.vocab, "--uncased", "--out", dataset,
                        "--max-seq-length", str(args.seq), "--next-sentence", "--overwrite",
                        "--no-progress"], check=True, cwd=REPO, capture_output=True)
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(parser)
    parser.add_argument("--vocab", default=DEFAULT_VOCAB)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", default="/tmp/bench")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    args.vocab = os.path.abspath(args.vocab)
    if args.child:
        marks = CHILDREN[args.child](args.variant, args.batch, args.seq, args.predictions,
                                     args.vocab)
        print(json.dumps(marks))
        return 0
    if not os.path.exists(args.vocab):
        parser.error(f"--vocab {args.vocab} not found (../shared/data/vocab is the default)")
    os.makedirs(args.scratch, exist_ok=True)
    dataset = prepare_dataset(args)

    runs: dict[str, list[dict]] = {kind: [] for kind in CHILDREN}
    cli = {"measured": [], "given": [], "cached": []}
    for _ in range(args.repeats):
        for kind in CHILDREN:
            runs[kind].append(run_child(kind, args))
        with tempfile.TemporaryDirectory(dir=args.scratch) as cache_dir:
            cli["measured"].append(run_cli(args, dataset, 0.0, os.path.join(cache_dir, "a")))
            cli["given"].append(run_cli(args, dataset, 1e11, os.path.join(cache_dir, "b")))
            cli["cached"].append(run_cli(args, dataset, 1e11, os.path.join(cache_dir, "b")))
    med = {kind: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
           for kind, rows in runs.items()}
    cli_med = {key: statistics.median(values) for key, values in cli.items()}

    lines = [f"| phase (seconds, median of {args.repeats}) | bertlab | transformers Flax | "
             "bertlab / transformers |", "|---|---:|---:|---:|"]
    for key in PHASES + ("total",):
        ours, peer = med["bertlab"][key], med["transformers"][key]
        name = "**launch → first step done**" if key == "total" else key
        lines.append(f"| {name} | {ours:.2f} | {peer:.2f} | {ours / peer:.2f} |")
    lines.append(f"| `bertlab pretrain` CLI, launch → first metrics line (peak FLOP/s measured) "
                 f"| {cli_med['measured']:.2f} | | {cli_med['measured'] / med['transformers']['total']:.2f} |")
    lines.append(f"| `bertlab pretrain` CLI, same with train.peak_flops given "
                 f"| {cli_med['given']:.2f} | | {cli_med['given'] / med['transformers']['total']:.2f} |")
    lines.append(f"| `bertlab pretrain` CLI, the same again: step loaded from the compilation cache "
                 f"| {cli_med['cached']:.2f} | | {cli_med['cached'] / med['transformers']['total']:.2f} |")
    table = "\n".join(lines)
    header = (f"{args.variant}, batch {args.batch}, seq {args.seq}; load average "
              f"{os.getloadavg()[0]:.1f} at the end")
    print(header + "\n\n" + table)
    if args.out:
        from markdown_out import append_table
        append_table(args.out, "startup.py", argv,
                     f"Start-up to the first step: {header}", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
