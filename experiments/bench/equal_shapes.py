"""The encoder step at equal shapes: bertlab against transformers PyTorch and Flax, one process.

Issue 14 asks whether bertlab's CPU step itself (not padding) loses to the PyTorch loop a
transformers user writes. Every side here computes the same thing on the same synthetic batch
(no padding, sequence length 128): a sequence-classification fine-tune step (2 labels, dropout
0.1 on, cross-entropy, AdamW with global-norm clipping at 1.0) and the same classifier's
inference forward pass, at three sizes:

    tiny    L2/H128/2 heads,  fine-tune batch 32, inference batch 64
    minilm  L6/H384/12 heads (all-MiniLM-L6-v2's shape, head size 32), batch 32 / 64
    base    L12/H768/12 heads (BERT-base), batch 16 / 16

Sides ("arms"):
    bertlab                 as the `bertlab` commands run it: the fine-tune step compiled with
                            bertlab.runtime's training settings (`bertlab finetune`), the
                            forward pass with its inference settings (`bertlab predict`)
    bertlab[<variant>]      the same step with one thing changed: an XLA option (compiled with
                            compiler_options, so every arm lives in this one process), the
                            dropout masks (dropout=threefry: flax's, the default before
                            BertConfig.dropout_impl="hash"), a PRNG implementation, or an
                            attention formulation (see VARIANTS)
    torch-eager, torch-sdpa BertForSequenceClassification, attn_implementation eager / sdpa,
                            torch.set_num_threads(os.cpu_count()), AdamW(foreach) + clipping
    flax                    transformers' FlaxBertForSequenceClassification + optax, jitted

Arms take turns call by call (the order rotates every repetition), so load from other jobs on
a shared machine falls on all of them alike; each figure is the median of the timed calls after
one warm-up call. The ratio columns divide the peer's median time by bertlab's (> 1: bertlab is
faster). The load average is printed before and after every size.

A second table times bare float32 matmuls at the layers' shapes: XLA (under each XLA option
arm), torch and numpy, interleaved the same way.

    .venv/bin/python experiments/bench/equal_shapes.py                    # a few minutes
    .venv/bin/python experiments/bench/equal_shapes.py --quick            # tiny + MiniLM, one peer
    .venv/bin/python experiments/bench/equal_shapes.py --sizes minilm --variants all --reps 5
    .venv/bin/python experiments/bench/equal_shapes.py --threads 1   # one core each (busy machine)

--out FILE appends the tables with the command and the machine to a markdown file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)


def _configure_first() -> bool:
    """bertlab.runtime.configure() must run before jax initialises (its process-wide part: the
    training settings; the inference settings go to each program's compile options);
    --no-runtime skips both."""
    if "--no-runtime" in sys.argv:
        return False
    from bertlab import runtime
    runtime.configure("finetune")
    return True


RUNTIME_CONFIGURED = _configure_first()


def _pin_first() -> int:
    """--threads 1: the whole process on one core, before jax sizes its thread pools from the
    CPU affinity, and torch on one thread. On a machine shared with other jobs a 2-thread
    OpenMP region waits for its slowest (descheduled) thread at every barrier, which punishes
    torch far more than XLA's work-stealing pools; one thread each compares the kernels."""
    if "--threads" not in sys.argv:
        return 0
    threads = int(sys.argv[sys.argv.index("--threads") + 1])
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    return threads


THREADS = _pin_first()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bertlab.models import BertForSequenceClassification, attention  # noqa: E402
from bertlab.models.config import BertConfig  # noqa: E402
from bertlab.train import mesh as mesh_lib  # noqa: E402
from bertlab.train import optimizer as optimizer_lib  # noqa: E402
from bertlab.train import state as train_state  # noqa: E402
from bertlab.train import steps  # noqa: E402

VOCAB_SIZE = 30522
SEQ = 128
NUM_LABELS = 2

# name -> (layers, hidden, heads, intermediate, fine-tune batch, inference batch)
SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (2, 128, 2, 512, 32, 64),
    "minilm": (6, 384, 12, 1536, 32, 64),
    "base": (12, 768, 12, 3072, 16, 16),
}


# --------------------------------------------------------------------------------------------
# bertlab variants: attention formulations (same numbers, another layout) and XLA options.
# --------------------------------------------------------------------------------------------

def heads_first_attention(q, k, v, bias, dropout, *unused):
    """Heads moved next to the batch before the two batched matmuls, so each is a plain
    (B*N) x (T, D) @ (D, T) product on contiguous rows; numerically the same sums."""
    scale = jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    q = jnp.transpose(q / scale, (0, 2, 1, 3))  # (B, N, T, D)
    k = jnp.transpose(k, (0, 2, 1, 3))  # (B, N, T, D)
    v = jnp.transpose(v, (0, 2, 1, 3))  # (B, N, T, D)
    scores = jnp.einsum("bnqd,bnkd->bnqk", q, k, preferred_element_type=jnp.float32)  # (B,N,T,T)
    probs = dropout(jax.nn.softmax(scores + bias, axis=-1))
    context = jnp.einsum("bnqk,bnkd->bnqd", probs.astype(v.dtype), v)  # (B, N, T, D)
    return jnp.transpose(context, (0, 2, 1, 3))  # (B, T, N, D)


def keys_transposed_attention(q, k, v, bias, dropout, *unused):
    """As heads_first_attention with K^T materialised (B, N, D, T): the score matmul then reads
    both operands row-major (a plain NN product)."""
    scale = jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    q = jnp.transpose(q / scale, (0, 2, 1, 3))  # (B, N, T, D)
    k_t = jnp.transpose(k, (0, 2, 3, 1))  # (B, N, D, T)
    v = jnp.transpose(v, (0, 2, 1, 3))  # (B, N, T, D)
    scores = jnp.einsum("bnqd,bndk->bnqk", q, k_t, preferred_element_type=jnp.float32)
    probs = dropout(jax.nn.softmax(scores + bias, axis=-1))  # (B, N, T, T)
    context = jnp.einsum("bnqk,bnkd->bnqd", probs.astype(v.dtype), v)  # (B, N, T, D)
    return jnp.transpose(context, (0, 2, 1, 3))  # (B, T, N, D)


ATTENTION_VARIANTS: dict[str, Callable] = {
    "attn=heads-first": heads_first_attention,
    "attn=kT": keys_transposed_attention,
}

# XLA:CPU options of jaxlib 0.10.2 (flag names and values checked against its binary). The
# empty YNN list sends dots back to XLA's own Eigen path; oneDNN needs use_onednn + a type.
XLA_VARIANTS: dict[str, dict] = {
    "xla=defaults": {"xla_cpu_experimental_ynn_fusion_type":
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"},
    "xla=ynn-dot": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "xla=eigen-dot": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "xla=onednn-dot": {"xla_cpu_experimental_ynn_fusion_type": "",
                       "xla_cpu_use_onednn": True, "xla_cpu_use_xnnpack": False,
                       "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"},
    "xla=fast-math": {"xla_cpu_enable_fast_math": True},
}

# oneDNN's graph path aborts the process on the inference program ("partition compile failed",
# jaxlib 0.10.2), so that arm times the fine-tune step only.
TRAIN_ONLY = ("xla=onednn-dot",)

# dropout=threefry: flax's nn.Dropout masks (BertConfig.dropout_impl="threefry", the default
# before the hashed masks); dropout=hash names the default explicitly (the same program).
OTHER_VARIANTS = ("dropout=threefry", "dropout=hash", "prng=rbg", "prng=threefry", "no-dropout")
ALL_VARIANTS = (*XLA_VARIANTS, *ATTENTION_VARIANTS, *OTHER_VARIANTS)


@contextlib.contextmanager
def explicit_kernel(kernel: Callable | None):
    """The model's explicit attention kernel replaced while a step is traced."""
    saved = attention.ATTENTION_KERNELS["explicit"]
    if kernel is not None:
        attention.ATTENTION_KERNELS["explicit"] = kernel
    try:
        yield
    finally:
        attention.ATTENTION_KERNELS["explicit"] = saved


def bert_config(size: str, dropout: float = 0.1, dropout_impl: str = "hash") -> BertConfig:
    layers, hidden, heads, inter, _, _ = SIZES[size]
    return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, num_layers=layers,
                      num_heads=heads, intermediate_size=inter, hidden_dropout=dropout,
                      attention_dropout=dropout, dropout_impl=dropout_impl)


def synthetic(batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB_SIZE, size=(batch, SEQ), dtype=np.int32)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    segments = np.zeros((batch, SEQ), np.int32)
    segments[:, SEQ // 2:] = 1
    return {"token_ids": ids, "segment_ids": segments,
            "attention_mask": np.ones((batch, SEQ), np.int32),
            "labels": rng.integers(0, NUM_LABELS, size=(batch,), dtype=np.int32),
            "example_weights": np.ones((batch,), np.float32)}


def bertlab_calls(size: str, variant: str | None) -> dict[str, Callable[[], None]]:
    """{"train": one fine-tune update, "infer": one forward pass}, compiled here."""
    _, _, _, _, train_batch, infer_batch = SIZES[size]
    parts = variant.split("+") if variant else []  # "a+b": both changes at once
    config = bert_config(size, dropout=0.0 if "no-dropout" in parts else 0.1,
                         dropout_impl="threefry" if "dropout=threefry" in parts else "hash")
    options = {key: value for part in parts for key, value in XLA_VARIANTS.get(part, {}).items()}
    # Each program compiled as the bertlab command that runs it would (bertlab.runtime), the
    # variant's options on top.
    from bertlab import runtime
    base = runtime.COMPILER_OPTIONS if RUNTIME_CONFIGURED else {"training": {}, "inference": {}}
    train_options = {**base["training"], **options}
    infer_options = {**base["inference"], **options}
    kernel = next((ATTENTION_VARIANTS[part] for part in parts if part in ATTENTION_VARIANTS), None)
    prng = next((part.split("=")[1] for part in parts if part.startswith("prng=")), None)
    model = BertForSequenceClassification(config, num_labels=NUM_LABELS)
    mesh = mesh_lib.data_mesh()
    ids = jnp.zeros((1, SEQ), jnp.int32)
    params = jax.jit(lambda key: model.init({"params": key}, ids, ids, jnp.ones_like(ids))["params"],
                     out_shardings=mesh_lib.replicated(mesh))(jax.random.PRNGKey(0))
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=2e-5, warmup_steps=10, num_steps=1000,
                                                weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                                clip_norm=1.0)
    holder = {"state": train_state.create_train_state(model, tx, params, mesh=mesh)}
    train_data = mesh_lib.global_batch(synthetic(train_batch), mesh)
    infer_data = mesh_lib.global_batch(synthetic(infer_batch, seed=2), mesh)
    rng = jax.random.key(1, impl=prng) if prng else jax.random.PRNGKey(1)
    step = steps.jit_classify_train_step(schedule=schedule, regression=False, frozen=(), mesh=mesh)
    forward = jax.jit(lambda p, b: model.apply({"params": p}, b["token_ids"], b["segment_ids"],
                                               b["attention_mask"], deterministic=True))
    with explicit_kernel(kernel):
        train = step.lower(holder["state"], train_data, rng).compile(
            compiler_options=train_options)
        infer = forward.lower(holder["state"].params, infer_data).compile(
            compiler_options=infer_options)

    def train_call():
        holder["state"], metrics = train(holder["state"], train_data, rng)
        jax.block_until_ready(metrics["loss"])

    calls = {"train": train_call,
             "infer": lambda: jax.block_until_ready(infer(holder["state"].params, infer_data))}
    if any(part in TRAIN_ONLY for part in parts):
        del calls["infer"]
    return calls


def torch_calls(size: str, attn: str) -> dict[str, Callable[[], None]] | None:
    try:
        import torch
        from transformers import BertConfig as HFConfig, BertForSequenceClassification as TorchBert
    except Exception:
        return None
    layers, hidden, heads, inter, train_batch, infer_batch = SIZES[size]
    torch.manual_seed(0)
    hf = HFConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=inter, num_labels=NUM_LABELS,
                  attn_implementation=attn)
    model = TorchBert(hf)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-6, weight_decay=0.01)

    def tensors(batch: dict) -> dict:
        return {"input_ids": torch.as_tensor(batch["token_ids"], dtype=torch.long),
                "token_type_ids": torch.as_tensor(batch["segment_ids"], dtype=torch.long),
                "attention_mask": torch.as_tensor(batch["attention_mask"], dtype=torch.long),
                "labels": torch.as_tensor(batch["labels"], dtype=torch.long)}

    train_data, infer_data = tensors(synthetic(train_batch)), tensors(synthetic(infer_batch, 2))
    infer_data.pop("labels")

    def train_call():
        model.train()
        loss = model(**train_data).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_call():
        model.eval()
        with torch.inference_mode():
            model(**infer_data).logits.sum().item()

    return {"train": train_call, "infer": infer_call}


def flax_calls(size: str) -> dict[str, Callable[[], None]] | None:
    try:
        from transformers import BertConfig as HFConfig, FlaxBertForSequenceClassification
    except Exception:  # transformers >= 5 has no Flax BERT
        return None
    layers, hidden, heads, inter, train_batch, infer_batch = SIZES[size]
    hf = HFConfig(vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=inter, num_labels=NUM_LABELS)
    model = FlaxBertForSequenceClassification(hf, seed=0, input_shape=(1, SEQ))
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(optax.linear_schedule(0.0, 2e-5, 10), eps=1e-6, weight_decay=0.01))
    train_data = {k: jnp.asarray(v) for k, v in synthetic(train_batch).items()}
    infer_data = {k: jnp.asarray(v) for k, v in synthetic(infer_batch, 2).items()}

    def train_step(params, opt_state, dropout_rng, batch):
        def loss_fn(p):
            logits = model(batch["token_ids"], batch["attention_mask"], batch["segment_ids"],
                           params=p, dropout_rng=dropout_rng, train=True).logits
            return optax.softmax_cross_entropy(logits, jax.nn.one_hot(batch["labels"], 2)).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train = jax.jit(train_step, donate_argnums=(0, 1))
    params = jax.tree_util.tree_map(jnp.array, model.params)  # own buffers, safe to donate
    holder = {"p": params, "o": tx.init(params)}
    key = jax.random.PRNGKey(0)
    forward = jax.jit(lambda p, b: model(b["token_ids"], b["attention_mask"], b["segment_ids"],
                                         params=p, train=False).logits)

    def train_call():
        holder["p"], holder["o"], loss = train(holder["p"], holder["o"], key, train_data)
        jax.block_until_ready(loss)

    return {"train": train_call,
            "infer": lambda: jax.block_until_ready(forward(holder["p"], infer_data))}


def interleaved(calls: dict[str, Callable[[], None]], reps: int, warmup: int = 1
                ) -> dict[str, list[float]]:
    """Seconds of every timed call per arm; arms alternate call by call, order rotating."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------------------------
# Bare matmuls at the layers' shapes.
# --------------------------------------------------------------------------------------------

def matmul_shapes(sizes: list[str]) -> list[tuple[int, int, int]]:
    shapes = [(2048, 2048, 2048)]
    for size in sizes:
        _, hidden, _, inter, batch, _ = SIZES[size]
        rows = batch * SEQ
        for k, n in ((hidden, 3 * hidden), (hidden, hidden), (hidden, inter), (inter, hidden)):
            if (rows, k, n) not in shapes:
                shapes.append((rows, k, n))
    return shapes


def matmul_table(shapes, xla_arms: list[str], reps: int) -> str:
    import torch
    header = ["shape (M x K x N)", *[f"XLA {arm}" for arm in xla_arms], "torch", "numpy"]
    lines = ["| " + " | ".join(header) + " | GFLOP/s, median |",
             "|---|" + "---:|" * (len(header) - 1) + "---|"]
    lines[0] = "| " + " | ".join(header) + " |"
    lines[1] = "|---|" + "---:|" * (len(header) - 1)
    for m, k, n in shapes:
        a, b = np.ones((m, k), np.float32), np.full((k, n), 0.5, np.float32)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        calls = {}
        for arm in xla_arms:
            compiled = jax.jit(jnp.matmul).lower(ja, jb).compile(
                compiler_options=XLA_VARIANTS.get(arm, {}))
            calls[arm] = lambda c=compiled: c(ja, jb).block_until_ready()
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch"] = lambda: torch.mm(ta, tb)
        calls["numpy"] = lambda: a @ b
        times = interleaved(calls, reps)
        rates = [2.0 * m * k * n / statistics.median(times[name]) / 1e9 for name in calls]
        lines.append(f"| {m} x {k} x {n} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    import torch
    return (f"{model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} used); "
            f"jax {jax.__version__}, torch {torch.__version__}"
            f" ({torch.get_num_threads()} threads)")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--peers", nargs="*", default=["torch-eager", "torch-sdpa", "flax"],
                        choices=["torch-eager", "torch-sdpa", "flax"])
    parser.add_argument("--variants", nargs="*", default=[],
                        help=f"bertlab variants to time beside it: {', '.join(ALL_VARIANTS)}, "
                             "or 'all'")
    parser.add_argument("--loops", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--reps", type=int, default=3, help="timed calls per arm (after 1 warm-up)")
    parser.add_argument("--matmul-reps", type=int, default=5)
    parser.add_argument("--no-matmul", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="tiny and minilm, torch-sdpa only, 2 timed calls (6 minutes with "
                             "--threads 1 on the busy 2-core machine, load 8)")
    parser.add_argument("--no-runtime", action="store_true",
                        help="skip bertlab.runtime.configure() (XLA's own defaults)")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin the process to this many cores (0: all) and give torch as many "
                             "threads (see _pin_first)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.peers, args.reps, args.matmul_reps = ["tiny", "minilm"], ["torch-sdpa"], 2, 3
        args.loops = ["train", "infer"]
    variants = list(ALL_VARIANTS) if args.variants == ["all"] else args.variants
    for variant in variants:
        if any(part not in ALL_VARIANTS for part in variant.split("+")):
            parser.error(f"unknown variant {variant!r}; known: {', '.join(ALL_VARIANTS)}")
    try:
        import torch
        torch.set_num_threads(THREADS or os.cpu_count() or 1)
    except ImportError:
        pass

    from bertlab import runtime
    flags = os.environ.get("XLA_FLAGS", "") if RUNTIME_CONFIGURED else "(XLA defaults)"
    settings = (f"training: {runtime.describe('finetune')}; inference: "
                f"{runtime.describe('predict')}" if RUNTIME_CONFIGURED else "off (XLA defaults)")
    print(f"machine: {machine()}\nbertlab.runtime: {settings}; XLA_FLAGS={flags!r}", flush=True)
    arms = ["bertlab", *[f"bertlab[{v}]" for v in variants], *args.peers]
    header = ("| size | loop | batch | " + " | ".join(f"{arm} s" for arm in arms) + " | "
              + " | ".join(f"{peer} / bertlab" for peer in args.peers) + " | load before → after |")
    rows = [header, "|---|---|---:|" + "---:|" * (len(arms) + len(args.peers)) + "---|"]
    for size in args.sizes:
        before = load()
        built: dict[str, dict] = {"bertlab": bertlab_calls(size, None)}
        for variant in variants:
            built[f"bertlab[{variant}]"] = bertlab_calls(size, variant)
        for peer in args.peers:
            calls = (torch_calls(size, peer.split("-")[1]) if peer.startswith("torch")
                     else flax_calls(size))
            if calls:
                built[peer] = calls
        for loop in args.loops:
            times = interleaved({arm: built[arm][loop] for arm in built if loop in built[arm]},
                                args.reps)
            medians = {arm: statistics.median(t) for arm, t in times.items()}
            print(f"  {size} {loop} fastest call s: "
                  + ", ".join(f"{arm} {min(t):.3f}" for arm, t in times.items()), flush=True)
            batch = SIZES[size][4 if loop == "train" else 5]
            cells = [f"{medians[arm]:.3f}" if arm in medians else "—" for arm in arms]
            ratios = [f"{medians[p] / medians['bertlab']:.2f}×" if p in medians else "—"
                      for p in args.peers]
            rows.append(f"| {size} | {'fine-tune step' if loop == 'train' else 'inference'} | "
                        f"{batch} | " + " | ".join(cells + ratios) + f" | {before} → {load()} |")
            print(rows[-1], flush=True)
            before = load()
        del built
    table = "\n".join(rows)
    print("\n" + table, flush=True)
    mm = ""
    if not args.no_matmul:
        xla_arms = ["xla=defaults", "xla=eigen-dot",
                    *[v for v in XLA_VARIANTS if v in variants and v not in ("xla=defaults",
                                                                              "xla=eigen-dot")]]
        print(f"\nmatmuls (load {load()})", flush=True)
        mm = matmul_table(matmul_shapes(args.sizes), xla_arms, args.matmul_reps)
        print("\n" + mm + f"\n\nload after: {load()}", flush=True)
    if args.out:
        from markdown_out import append_table
        append_table(args.out, "equal_shapes.py", argv,
                     f"Equal shapes, seq {SEQ}, float32 — {machine()}", table
                     + (f"\n\nBare matmuls (GFLOP/s):\n\n{mm}" if mm else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
