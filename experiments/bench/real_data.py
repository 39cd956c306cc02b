"""Real-data throughput (issue 14): bertlab packed vs bertlab padded vs the peers, on GLUE text.

Three tables, appended to --out with the command, the commit and the machine's load:

1. Fine-tune training examples/s on the first batches (seeded order) of SST-2, CoLA and MRPC
   training subsets and QNLI dev (../shared has no QNLI train), batch 32, T=128, dropout on,
   at sizes tiny, mini, MiniLM (L6/H384/12 heads) and base, random init (speed only):
     bertlab packed   the loop's step on pack_batch rows, R planned as the loop plans a
                      one-epoch run over the whole split (the buckets it would compile)
     bertlab padded   the same step, every example in its own row of 128 (data.packing=False)
     torch            transformers BertForSequenceClassification + torch AdamW, each batch
                      padded to its longest row (the plain loop a user writes)
     flax 128         transformers FlaxBertForSequenceClassification + optax AdamW, jitted,
                      padded to 128 (transformers' Flax GLUE example)
   Interleaved: each round runs a few steps of every engine on the same batches, so load
   changes hit all engines alike; ratios are medians of per-round ratios. Compilation and a
   warm-up step are excluded (the whole-process table counts them).
2. Whole process: `bertlab finetune` (SST-2, 1,024 sentences, all-MiniLM-L6-v2, 1 epoch, lr
   1e-4, batch 32, cold compilation cache) vs experiments/bench/peer_finetune_torch.py, both
   timed from process start to exit, with their dev accuracy.
3. Inference examples/s with MiniLM: predict (classifier forward, SST-2 dev and QNLI dev pairs)
   and embed (mean pooling, SST-2 dev sentences) vs PyTorch with per-batch padding (batch 64),
   packed and padded bertlab, interleaved passes after a warm-up pass.

The machine (2 cores) is shared with other agents: every table records `uptime` before and after;
compare ratios, not absolute rates.

    .venv/bin/python experiments/bench/real_data.py --quick --out experiments/bench/real_data.md
    .venv/bin/python experiments/bench/real_data.py --out experiments/bench/real_data.md  # all
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED = os.path.join(os.path.dirname(REPO), "shared")
GLUE = os.path.join(SHARED, "data", "glue_data")
VOCAB = os.path.join(SHARED, "data", "vocab", "bert-base-uncased-vocab.txt")
MINILM = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")
SIZES = {"tiny": (2, 128, 2, 512), "mini": (4, 256, 4, 1024), "minilm": (6, 384, 12, 1536),
         "base": (12, 768, 12, 3072)}
CASES = {"sst2": "train", "cola": "train", "mrpc": "train", "qnli": "dev"}
BATCH, T, VOCAB_SIZE = 32, 128, 30522


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()


def encoded_task(task: str, split: str, count: int) -> dict:
    """Tokenizer.pack arrays (N, 128) + labels of the first `count` rows of a seeded order."""
    from bertlab.data.tasks.glue import load_glue
    from bertlab.text.tokenizer import Tokenizer

    data = load_glue(task, GLUE, split)
    rows = np.random.default_rng(0).permutation(len(data.texts))[:count]
    tokenizer = Tokenizer.from_file(VOCAB, lower_case=True)
    texts = [data.texts[i] for i in rows]
    pairs = None if data.text_pairs is None else [data.text_pairs[i] for i in rows]
    encoded = tokenizer.pack(texts, pairs, max_length=T)
    encoded["labels"] = np.asarray(data.labels, np.int32)[rows] % 2
    return encoded


# ----------------------------------------------------------------------------- train engines

def epoch_batches(task: str) -> int:
    """Batches of BATCH in one epoch over the task's whole split (what a run plans over)."""
    from bertlab.data.tasks.glue import load_glue

    return max(1, len(load_glue(task, GLUE, CASES[task]).texts) // BATCH)


def bertlab_engine(size: str, encoded: dict, batches: list, packed: bool,
                   run_batches: int | None = None):
    """step(i) runs batch i; returns a callable that blocks until done. run_batches: the
    batches of the run the packing is planned for (None: just these): the loop weighs each
    compiled program (task_data.PROGRAM_COST_ROWS) against the rows it saves over the whole
    run, so planning the bench's few batches alone would pick fewer, larger buckets than a
    one-epoch run does."""
    import jax
    import jax.numpy as jnp
    import optax

    from bertlab.data import packing
    from bertlab.models import BertForSequenceClassification
    from bertlab.models.config import BertConfig
    from bertlab.train import mesh as mesh_lib
    from bertlab.train import steps, task_data
    from bertlab.train.state import create_train_state

    layers, hidden, heads, inter = SIZES[size]
    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, num_layers=layers,
                        num_heads=heads, intermediate_size=inter, max_position_embeddings=512)
    model = BertForSequenceClassification(config, num_labels=2)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(lambda k: model.init({"params": k}, ids, ids, ids + 1)["params"])(
        jax.random.PRNGKey(0))
    mesh = mesh_lib.data_mesh()
    state = create_train_state(model, optax.adamw(1e-4), params, mesh=mesh)
    train_step = steps.jit_classify_train_step(schedule=lambda s: 1e-4, regression=False,
                                               frozen=(), mesh=mesh)
    plan = None
    if packed:
        run = max(run_batches or 0, len(batches))
        plan = task_data.plan_packing(packing.example_lengths(encoded["attention_mask"]),
                                      batches, examples=BATCH, row_length=T, max_programs=4,
                                      program_cost=task_data.PROGRAM_COST_ROWS * len(batches) / run)
    holder = {"state": state, "rng": jax.random.PRNGKey(1)}

    def local(i):
        if plan is None:
            return task_data.batch_of(encoded, batches[i], BATCH)
        return task_data.packed_batch_of(encoded, batches[i], BATCH, plan, i)

    def step(i):
        holder["state"], metrics = train_step(holder["state"],
                                              mesh_lib.global_batch(local(i), mesh),
                                              holder["rng"])
        jax.block_until_ready(metrics["loss"])

    warm = sorted({plan.rows.index(r) for r in plan.buckets}) if plan else [0]
    return step, warm, (plan.buckets if plan else (BATCH,))


def torch_engine(size: str, encoded: dict, batches: list):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    layers, hidden, heads, inter = SIZES[size]
    model = BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=inter, num_labels=2))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lengths = encoded["attention_mask"].sum(1)

    def step(i):
        rows = batches[i]
        longest = int(lengths[rows].max())  # the tokenizer's padding="longest"
        inputs = {"input_ids": torch.as_tensor(encoded["token_ids"][rows, :longest]),
                  "token_type_ids": torch.as_tensor(encoded["segment_ids"][rows, :longest]),
                  "attention_mask": torch.as_tensor(encoded["attention_mask"][rows, :longest])}
        out = model(**inputs, labels=torch.as_tensor(encoded["labels"][rows]).long())
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step, [0], ()


def flax_engine(size: str, encoded: dict, batches: list):
    import jax
    import optax
    from transformers import BertConfig, FlaxBertForSequenceClassification

    layers, hidden, heads, inter = SIZES[size]
    model = FlaxBertForSequenceClassification(BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=inter, num_labels=2), seed=0)
    tx = optax.adamw(1e-4)
    holder = {"params": model.params, "opt": tx.init(model.params)}

    @jax.jit
    def train(params, opt_state, batch, rng):
        def loss_fn(p):
            logits = model(batch["token_ids"], batch["attention_mask"], batch["segment_ids"],
                           params=p, dropout_rng=rng, train=True).logits
            return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                   batch["labels"]).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def step(i):
        rows = batches[i]
        batch = {k: encoded[k][rows] for k in ("token_ids", "attention_mask", "segment_ids",
                                               "labels")}
        holder["params"], holder["opt"], loss = train(holder["params"], holder["opt"], batch,
                                                      jax.random.PRNGKey(i))
        jax.block_until_ready(loss)

    return step, [0], ()


def train_table(tasks, sizes, rounds: int, per_round: int, log) -> str:
    lines = ["| task | size | packed ex/s | padded ex/s | torch ex/s | flax-128 ex/s | "
             "packed / padded | packed / torch | packed / flax | row buckets | real tokens |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        count = BATCH * rounds * per_round
        encoded = encoded_task(task, CASES[task], count)
        batches = [np.arange(s, s + BATCH) for s in range(0, count, BATCH)]
        real = encoded["attention_mask"].sum() / encoded["attention_mask"].size
        run_batches = epoch_batches(task)
        for size in sizes:
            engines = {"packed": bertlab_engine(size, encoded, batches, True, run_batches),
                       "padded": bertlab_engine(size, encoded, batches, False),
                       "torch": torch_engine(size, encoded, batches),
                       "flax": flax_engine(size, encoded, batches)}
            for name, (step, warm, _) in engines.items():
                started = time.time()
                for i in warm:
                    step(i)
                log(f"{task} {size} {name}: warm-up {time.time() - started:.1f} s")
            seconds = {name: [] for name in engines}
            for r in range(rounds):
                chunk = range(r * per_round, (r + 1) * per_round)
                for name, (step, _, _) in engines.items():
                    started = time.perf_counter()
                    for i in chunk:
                        step(i)
                    seconds[name].append(time.perf_counter() - started)
            log(f"{task} {size} seconds per round: " + ", ".join(
                f"{n} {[round(x, 2) for x in v]}" for n, v in seconds.items()))
            # medians: a neighbour's burst hits one round, not the table
            rate = {n: BATCH * per_round / float(np.median(s)) for n, s in seconds.items()}
            ratio = lambda a, b: float(np.median(np.asarray(seconds[b]) / np.asarray(seconds[a])))
            lines.append(f"| {task} {CASES[task]} | {size} | {rate['packed']:.1f} | "
                         f"{rate['padded']:.1f} | {rate['torch']:.1f} | {rate['flax']:.1f} | "
                         f"{ratio('packed', 'padded'):.2f}x | {ratio('packed', 'torch'):.2f}x | "
                         f"{ratio('packed', 'flax'):.2f}x | {list(engines['packed'][2])} | "
                         f"{real:.0%} |")
            log(lines[-1])
    return "\n".join(lines)


# ------------------------------------------------------------------------- whole process

def whole_process_table(log, padded_too: bool) -> str:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--config", "configs/finetune.py:task=sst2", "--config.model.init_from=" + MINILM,
                  "--config.data.data_dir=" + GLUE, "--config.data.max_train_examples=1024",
                  "--config.train.epochs=1", "--config.optimizer.lr=1e-4"]
        arms = [("bertlab finetune (packed)", [sys.executable, "-m", "bertlab", "finetune",
                                               "--workdir", os.path.join(tmp, "packed")] + common)]
        if padded_too:
            arms.append(("bertlab finetune --config.data.packing=False",
                         [sys.executable, "-m", "bertlab", "finetune", "--workdir",
                          os.path.join(tmp, "padded")] + common + ["--config.data.packing=False"]))
        arms.append(("peer_finetune_torch.py", [sys.executable, os.path.join(
            REPO, "experiments", "bench", "peer_finetune_torch.py"), "--model", MINILM,
            "--data-dir", GLUE]))
        env = dict(os.environ, BERTLAB_COMPILATION_CACHE=os.path.join(tmp, "xla_cache"))
        for name, argv in arms:
            started = time.time()
            result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
            seconds = time.time() - started
            out = result.stdout + result.stderr
            accuracy = ""
            for line in out.splitlines():
                if "accuracy" in line:
                    accuracy = line.strip()
            if result.returncode:
                accuracy = "FAILED: " + out[-300:]
            runs.append((name, seconds, accuracy))
            log(f"{name}: {seconds:.1f} s; {accuracy}")
    peer = runs[-1][1]
    lines = ["| process | seconds | / torch script | last line with accuracy |", "|---|---|---|---|"]
    lines += [f"| {n} | {s:.1f} | {s / peer:.2f}x | {a[:160]} |" for n, s, a in runs]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- inference

def inference_table(rounds: int, log) -> str:
    import jax
    import torch
    from transformers import AutoModel, BertForSequenceClassification as TorchClassifier

    from bertlab import inference
    from bertlab.checkpoints.init_from import resolve_backbone
    from bertlab.models import BertForSequenceClassification
    from bertlab.train import mesh as mesh_lib
    from bertlab.train import steps
    from bertlab.train.state import create_train_state
    import optax

    backbone = resolve_backbone(MINILM)
    mesh = mesh_lib.data_mesh()
    model = BertForSequenceClassification(backbone.config, num_labels=2)
    ids = jax.numpy.zeros((1, 8), jax.numpy.int32)
    head = model.init({"params": jax.random.PRNGKey(0)}, ids, ids, ids + 1)["params"]
    params = {**head, "bert": backbone.params}
    state = create_train_state(model, optax.identity(), params, mesh=mesh)
    eval_step = steps.jit_classify_eval_step(mesh=mesh)
    torch_classifier = TorchClassifier.from_pretrained(MINILM, num_labels=2).eval()
    torch_encoder = AutoModel.from_pretrained(MINILM).eval()

    def torch_pass(encoded, classify: bool):
        lengths = encoded["attention_mask"].sum(1)
        with torch.no_grad():
            for start in range(0, len(lengths), 64):
                rows = slice(start, start + 64)
                longest = int(lengths[rows].max())
                inputs = {"input_ids": torch.as_tensor(encoded["token_ids"][rows, :longest]),
                          "token_type_ids": torch.as_tensor(encoded["segment_ids"][rows, :longest]),
                          "attention_mask": torch.as_tensor(encoded["attention_mask"][rows, :longest])}
                if classify:
                    torch_classifier(**inputs).logits.numpy()
                else:
                    hidden = torch_encoder(**inputs).last_hidden_state
                    mask = inputs["attention_mask"].unsqueeze(-1).float()
                    ((hidden * mask).sum(1) / mask.sum(1)).numpy()

    lines = ["| what | data | examples | bertlab packed ex/s | bertlab padded ex/s | torch ex/s | "
             "packed / torch | packed / padded |", "|---|---|---|---|---|---|---|---|"]
    for what, task, split in (("predict", "sst2", "dev"), ("predict", "qnli", "dev"),
                              ("embed", "sst2", "dev")):
        encoded = encoded_task(task, split, 1024 if task == "qnli" else 872)
        texts = None
        if what == "embed":
            from bertlab.data.tasks.glue import load_glue
            texts = load_glue("sst2", GLUE, "dev").texts
            encoded = encoded_task("sst2", "dev", 872)  # the same sentences, for torch
            engines = {
                "packed": lambda: inference.sentence_embeddings(backbone, texts, packed=True),
                "padded": lambda: inference.sentence_embeddings(backbone, texts, batch_size=64,
                                                                packed=False),
                "torch": lambda: torch_pass(encoded, False)}
        else:
            engines = {
                "packed": lambda: inference.run_eval(eval_step, state, encoded, 64, mesh,
                                                     packed=True),
                "padded": lambda: inference.run_eval(eval_step, state, encoded, 64, mesh),
                "torch": lambda: torch_pass(encoded, True)}
        for fn in engines.values():
            fn()  # warm-up: compiles
        seconds = {n: [] for n in engines}
        for _ in range(rounds):
            for name, fn in engines.items():
                started = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - started)
        n = len(encoded["token_ids"])
        log(f"{what} {task} seconds per pass: " + ", ".join(
            f"{k} {[round(x, 2) for x in v]}" for k, v in seconds.items()))
        rate = {k: n / float(np.median(v)) for k, v in seconds.items()}
        ratio = lambda a, b: float(np.median(np.asarray(seconds[b]) / np.asarray(seconds[a])))
        lines.append(f"| {what} | {task} {split} | {n} | {rate['packed']:.1f} | "
                     f"{rate['padded']:.1f} | {rate['torch']:.1f} | "
                     f"{ratio('packed', 'torch'):.2f}x | {ratio('packed', 'padded'):.2f}x |")
        log(lines[-1])
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="SST-2 and MRPC at tiny and MiniLM, 5 rounds of 1 step: ~10 "
                             "minutes on an idle 2-core machine")
    parser.add_argument("--tables", default="train,process,inference")
    parser.add_argument("--tasks", default="", help="comma-separated (default: all, or quick's)")
    parser.add_argument("--sizes", default="", help="comma-separated (default: all, or quick's)")
    parser.add_argument("--steps-per-round", type=int, default=1,
                        help="training steps each engine runs back to back in a round (on "
                             "small models one step between three other engines runs with "
                             "cold caches, which a training loop never does: use 3)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",") if args.tasks else (["sst2", "mrpc"] if args.quick
                                                       else list(CASES))
    sizes = args.sizes.split(",") if args.sizes else (["tiny", "minilm"] if args.quick
                                                      else list(SIZES))
    rounds, per_round = (5 if args.quick else 7), args.steps_per_round
    log = lambda message: print(message, flush=True)
    sections = []
    tables = args.tables.split(",")
    for name, build in (("train", lambda: train_table(tasks, sizes, rounds, per_round, log)),
                        ("process", lambda: whole_process_table(log, not args.quick)),
                        ("inference", lambda: inference_table(3, log))):
        if name not in tables:
            continue
        before = uptime()
        table = build()
        sections.append(f"### {name}\n\nload before: `{before}`  \nload after: `{uptime()}`\n\n"
                        f"{table}\n")
    command = "python experiments/bench/real_data.py " + " ".join(argv or sys.argv[1:])
    text = (f"## real data, commit {commit()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
            f"\n\n`{command}`\n\n" + "\n".join(sections))
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
