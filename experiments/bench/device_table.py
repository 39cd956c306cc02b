"""The accelerator table of issue 18, in one run: MLM train step, fine-tuning and inference, in
float32 and bfloat16, bertlab against transformers' PyTorch BERT, with MFU and the input bound.

    python experiments/bench/device_table.py OUT_DIR            # the GPU table, < 8 minutes
    python experiments/bench/device_table.py OUT_DIR --dry-run  # all rows, toy sizes, any device

experiments/bench/device.sh sets up the environment and calls this. Writes OUT_DIR/device_table.md
and OUT_DIR/device_table.json (plus the workers' raw JSON lines and logs).

Why it is built this way:
- Each side runs in its own worker process, one after the other: JAX preallocates most of the
  GPU's memory for its process, so the PyTorch peer cannot share a process (or a moment) with
  it; the peer may also live in another virtual environment (--torch-python). This orchestrating
  process imports neither framework.
- A time budget per group of rows, rows in priority order (BERT-base first): a row starts only
  while its group has time left, each row's timed loop is capped, and a worker that overruns is
  killed; rows not reached are listed as such. A rerun on the same machine reuses the compiled
  programs (persistent compilation cache), so a fix-and-rerun costs less than the first run.
- Every speed is a median of steps timed after warm-up; MFU = model FLOPs per token
  (bertlab.models.flops_per_token: the MLM head at the masked positions for us, at every position
  for the peer, which computes it there) x tokens/s over (a) the best measured matmul rate of
  the device in the row's dtype (JAX and PyTorch each time an 8192^3 matmul; float32 runs on
  TF32 tensor cores on both sides, as the models' matmuls do) and (b) the vendor's dense peak.
- Input bound: the host path of the pretraining loop (BatchIterator over memory-mapped shards
  -> take -> global_batch onto the device) is timed alone, and the step is timed fed by it
  (dispatch is asynchronous, so host and device overlap as in bertlab.train.pretrain). A row is
  input-bound when the host path alone is slower than the step. Masking runs inside the jitted
  step on the device (bertlab.train.steps); its cost on the host CPU is timed too, for the case
  where it would have to move there.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
VOCAB_SIZE = 30522
NUM_LABELS = 2

# Dense (no structured sparsity) tensor-core peaks, TFLOP/s: (bfloat16, TF32). From NVIDIA's
# datasheets, whose headline figures are "with sparsity" and twice the dense ones:
#   H100 SXM5 and H100 PCIe: "NVIDIA H100 Tensor Core GPU" datasheet (BF16 1,979 / 1,513 and
#     TF32 989 / 756 TFLOPS with sparsity);
#   H100 NVL: same datasheet (BF16 1,671, TF32 835 with sparsity);
#   H200 (SXM): "NVIDIA H200 Tensor Core GPU" datasheet (BF16 1,979, TF32 989 with sparsity);
#   A100 (SXM and PCIe, 40/80 GB): "NVIDIA A100 Tensor Core GPU" datasheet (BF16 312, TF32 156
#     dense; 624 / 312 with sparsity).
VENDOR_DENSE_TFLOPS = {
    "H200": (989.0, 494.7),
    "H100 NVL": (835.5, 417.8),
    "H100 PCIe": (756.0, 378.0),
    "H100 SXM": (989.0, 494.7),
    "A100": (312.0, 156.0),
}


def vendor_key(device_name: str) -> str | None:
    """The VENDOR_DENSE_TFLOPS key of a device name as jax or torch spell it, e.g. 'NVIDIA H100
    80GB HBM3' (the SXM part), 'NVIDIA H100 PCIe', 'NVIDIA H200', 'NVIDIA A100-SXM4-80GB'."""
    name = device_name.lower()
    if "h200" in name:
        return "H200"
    if "h100" in name:
        if "nvl" in name:
            return "H100 NVL"
        return "H100 PCIe" if "pcie" in name else "H100 SXM"
    if "a100" in name:
        return "A100"
    return None


def vendor_peak(device_name: str, dtype: str) -> float | None:
    """FLOP/s of the vendor's dense peak for the row's dtype (float32 rows: TF32)."""
    key = vendor_key(device_name)
    if key is None:
        return None
    bf16, tf32 = VENDOR_DENSE_TFLOPS[key]
    return 1e12 * (bf16 if dtype == "bfloat16" else tf32)


# ---- the plan ------------------------------------------------------------------------------

MLM_VARIANTS = ("tiny", "mini", "small", "base", "large")
DTYPES = ("float32", "bfloat16")
# Tokens per step ~32k (batch 256 at seq 128, 64 at 512), the range pretraining uses per device;
# large at 128 sequences so float32 fits 80 GB. A row that runs out of memory halves its batch.
MLM_BATCH = {("large", 128): 128}
MLM_SHAPES = [(v, 128) for v in MLM_VARIANTS] + [("base", 512)]
# The original's max_predictions_per_seq: 20 at seq 128, 80 at seq 512.
PREDICTIONS = {128: 20, 512: 80}
# Priority: the issue's target rows first (base bf16, its f32 and the peer), small models last.
PRIORITY = [("base", 128), ("large", 128), ("base", 512), ("small", 128), ("mini", 128),
            ("tiny", 128)]
TUNE_VARIANTS = ("tiny", "base")

# Toy sizes of --dry-run: every row's code path on any device in a few minutes.
DRY_SIZES = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
# Both lengths 32 in a dry run: the seq-512 rows then reuse the seq-128 rows' compiled programs
# (same code path; compiling is most of a dry run's time on a CPU).
DRY_SEQ = {128: 32, 512: 32}


def variant_sizes(variant: str) -> dict:
    config = load_config_module()
    return dict(config.VARIANTS[variant])


def load_config_module():
    """bertlab/models/config.py alone (no jax inside), also for a worker without jax."""
    spec = importlib.util.spec_from_file_location(
        "bertlab_models_config", os.path.join(REPO, "bertlab", "models", "config.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def make_plan(args) -> dict:
    """Rows, grouped, each group with its time budget. A row is a dict the workers read."""
    dry = args.dry_run
    sizes = (lambda variant: dict(DRY_SIZES)) if dry else variant_sizes
    seq_of = (lambda seq: DRY_SEQ[seq]) if dry else (lambda seq: seq)

    def batch_of(variant, seq):
        if dry:
            return 4
        return MLM_BATCH.get((variant, seq), 256 if seq <= 128 else 64)

    variants = [s for s in PRIORITY if s[0] in args.variants]
    mlm = []
    for dtype in (["bfloat16", "float32"]):
        for variant, seq in variants:
            mlm.append({"kind": "mlm", "variant": variant, "seq": seq_of(seq), "paper_seq": seq,
                        "batch": batch_of(variant, seq), "dtype": dtype,
                        "predictions": max(1, PREDICTIONS[seq] * seq_of(seq) // seq),
                        "sizes": sizes(variant)})
    # the two target rows first: base bf16 then base f32
    mlm.sort(key=lambda r: (0 if r["variant"] == "base" and r["paper_seq"] == 128 else 1))
    shapes = {(r["seq"], r["batch"]): r["predictions"] for r in mlm}
    inputs = [{"kind": "input", "seq": s, "batch": b, "predictions": p}
              for (s, b), p in sorted(shapes.items())]
    tune = []
    for variant in [v for v in TUNE_VARIANTS if v in args.tune_variants]:
        for dtype in DTYPES:
            tune.append({"kind": "tune", "variant": variant, "seq": 32 if dry else 128,
                         "batch": 4 if dry else 32, "infer_batches": [4] if dry else [32, 128],
                         # finetune_infer.bertlab_calls builds a named variant: tiny in a dry run
                         "build_variant": "tiny" if dry else variant, "dtype": dtype,
                         "sizes": variant_sizes("tiny" if dry else variant)})
    for i, row in enumerate(mlm + inputs + tune):
        row["id"] = i
    # 420 s of rows + 3 x 20 s of grace for a worker killed mid-row = 8 minutes at worst.
    budget = args.budget_s or (1500.0 if dry else 420.0)
    groups = [
        {"name": "jax", "worker": "jax", "budget_s": 0.63 * budget,
         "rows": [{"kind": "env"}, {"kind": "peak"}, {"kind": "attention"}] + inputs + mlm},
        {"name": "jax-tune", "worker": "jax", "budget_s": 0.12 * budget, "rows": tune},
        {"name": "torch", "worker": "torch", "budget_s": 0.25 * budget,
         "rows": [{"kind": "env"}, {"kind": "peak"}] + [r for r in mlm] + tune},
    ]
    if args.skip_torch:
        groups = groups[:2]
    # A timed MLM call is `chain` steps dispatched back to back, then one wait: the training
    # loop never waits per step, and at small sizes a per-step wait would time the dispatch.
    timing = ({"warmup": 1, "min_timed": 2, "max_timed": 3, "cap_s": 2.0, "loop_steps": 2,
               "chain": 1}
              if dry else {"warmup": 2, "min_timed": 5, "max_timed": 30, "cap_s": 4.0,
                           "loop_steps": 10, "chain": 5})
    return {"dry_run": dry, "groups": groups, "timing": timing,
            "torch_compile": bool(args.torch_compile)}


# ---- shared by the workers -----------------------------------------------------------------

def timed_median(step, *, warmup: int, min_timed: int, max_timed: int, cap_s: float) -> tuple:
    """(median seconds, number timed) of `step()` (which blocks), after `warmup` calls; timing
    stops after max_timed calls or cap_s seconds, whichever first, but not before min_timed."""
    for _ in range(warmup):
        step()
    times, start = [], time.perf_counter()
    while len(times) < max_timed and (len(times) < min_timed
                                      or time.perf_counter() - start < cap_s):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def is_out_of_memory(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "OutOfMemory",
                                   "out of memory"))


def with_batch_halving(run, row: dict, *, smallest: int = 4, cleanup=None) -> dict:
    """run(batch) -> result dict; on out-of-memory, halve the batch (noting it) and retry.
    The retry starts after the except block: until then the exception's traceback keeps the
    failed attempt's model and optimizer state alive on the device. cleanup() frees caches."""
    batch, notes = row["batch"], []
    while True:
        failed = False
        try:
            result = run(batch)
            result["batch"] = batch
            if notes:
                result["note"] = "; ".join(notes)
            return result
        except Exception as e:  # noqa: BLE001 - reported in the row
            if not is_out_of_memory(e) or batch // 2 < smallest:
                raise
            notes.append(f"out of memory at batch {batch}")
            failed = True
        if failed:
            batch //= 2
            gc.collect()
            if cleanup is not None:
                cleanup()


def emit(results_path: str, record: dict) -> None:
    with open(results_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


def run_rows(group: dict, plan: dict, results_path: str, handlers: dict) -> None:
    """Each row in order while the group has time: handlers[kind](row, plan) -> dict."""
    start = time.time()
    budget = group["budget_s"]
    for row in group["rows"]:
        elapsed = time.time() - start
        # A big row (compile + timing) needs room; a small one less.
        share = {"large": 0.2, "base": 0.12}.get(row.get("variant"), 0.05)
        need = 0.0 if row["kind"] in ("env", "peak", "attention") else share * budget
        record = {"group": group["name"], "id": row.get("id"), "kind": row["kind"]}
        if elapsed + need > budget:
            record.update(status="skipped", reason=f"group budget {budget:.0f} s spent "
                                                   f"({elapsed:.0f} s elapsed)")
            emit(results_path, record)
            continue
        t0 = time.time()
        try:
            record.update(handlers[row["kind"]](row, plan))
            record["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - a failed row must not stop the table
            record.update(status="error", error=f"{type(e).__name__}: {str(e)[:400]}")
            traceback.print_exc()
        record["wall_s"] = round(time.time() - t0, 2)
        emit(results_path, record)
        gc.collect()


# ---- the JAX worker ------------------------------------------------------------------------

def jax_worker(group: dict, plan: dict, results_path: str) -> None:
    sys.path.insert(0, REPO)
    sys.path.insert(0, HERE)
    import functools
    functools_partial = functools.partial

    import jax
    import numpy as np

    from bertlab.train import compile_cache
    compile_cache.enable()  # ~/.cache/bertlab/xla unless BERTLAB_COMPILATION_CACHE says else
    import finetune_infer  # noqa: E402  (reused: the fine-tuning and inference loops)
    import train_step  # noqa: E402  (reused: the MLM step and its synthetic batch)
    from bertlab.data.pretraining.iterator import BatchIterator
    from bertlab.data.pretraining.shards import DATASET_META_FILE, ShardedExamples, ShardWriter
    from bertlab.train import mesh as mesh_lib
    from bertlab.train.peak_flops import measure_matmul_flops

    timing = plan["timing"]
    datasets: dict = {}
    workdir = tempfile.mkdtemp(prefix="bertlab-device-table-")

    def dataset(seq: int, batch: int) -> ShardedExamples:
        """Synthetic shards like create_pretraining_data's: 90 % full rows, 10 % shorter."""
        if seq not in datasets:
            rng = np.random.default_rng(seq)
            count = max(4096, 16 * batch)
            lengths = np.where(rng.random(count) < 0.9, seq, rng.integers(8, seq + 1, count))
            split = os.path.join(workdir, f"seq{seq}", "train")
            writer = ShardWriter(split, max_seq_length=seq, vocab_size=VOCAB_SIZE)
            tokens = rng.integers(5, VOCAB_SIZE, int(lengths.sum())).astype(np.int32)
            segments = np.zeros(len(tokens), np.int8)
            writer.add_batch(tokens, segments, lengths, rng.integers(0, 2, count).astype(np.int8))
            writer.close()
            with open(os.path.join(workdir, f"seq{seq}", DATASET_META_FILE), "w") as f:
                f.write("{}")
            datasets[seq] = ShardedExamples.open(split)
        return datasets[seq]

    def env(row, plan):
        device = jax.devices()[0]
        from bertlab.models import attention_select
        facts = attention_select.device_facts(device)
        return {"jax": jax.__version__, "platform": device.platform,
                "device": getattr(device, "device_kind", str(device)),
                "devices": len(jax.devices()), "python": platform.python_version(),
                "compute_capability": facts["compute_capability"],
                "cudnn_version": facts["cudnn_version"],
                "flax": __import__("flax").__version__, "optax": __import__("optax").__version__,
                "host": train_step.machine() if device.platform == "cpu" else platform.node()}

    def peak(row, plan):
        size = 1024 if plan["dry_run"] else None
        return {"flops": {d: measure_matmul_flops(size=size, dtype=d) for d in DTYPES}}

    def attention_row(row, plan):
        """cuDNN vs XLA vs the explicit kernel on a padded bf16 batch: forward + backward time
        and the error of output and input gradients against float32 explicit attention."""
        import warnings

        import jax.numpy as jnp

        from bertlab.models import attention_select as sel
        from bertlab.models.attention import attention_probs, weighted_values

        batch, seq, heads, head_dim = (2, 32, 2, 16) if plan["dry_run"] else (32, 128, 12, 64)
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        q, k, v = (jax.random.normal(key, (batch, seq, heads, head_dim), jnp.bfloat16)
                   for key in keys[:3])
        weights = jax.random.normal(keys[3], (batch, seq, heads, head_dim), jnp.float32)
        lengths = np.linspace(seq // 2, seq, batch).astype(int)
        real = np.arange(seq)[None, :] < lengths[:, None]  # (B, T)
        bias = jnp.asarray(np.where(real, 0.0, -1e9).astype(np.float32)[:, None, None, :])
        case = sel.AttentionCase(dtype="bfloat16", head_dim=head_dim, has_dropout=False,
                                 mask="padding", query_len=seq, key_len=seq,
                                 **sel.device_facts())
        choice = sel.choose(case)
        kernels = {
            "explicit": lambda q, k, v: weighted_values(attention_probs(q, k, bias), v),
            "xla": lambda q, k, v: sel.dot_product_attention(
                q, k, v, bias, sel.AttentionChoice("xla", "")),
            "cudnn": lambda q, k, v: sel.dot_product_attention(
                q, k, v, bias, sel.AttentionChoice("cudnn", "", full_bias=True)),
        }

        def loss_and_grads(fn, *args):
            return jax.value_and_grad(lambda q, k, v: jnp.sum(
                fn(q, k, v).astype(jnp.float32) * weights * real[:, :, None, None]),
                argnums=(0, 1, 2))(*args)

        f32 = [x.astype(jnp.float32) for x in (q, k, v)]
        ref_out = kernels["explicit"](*f32)
        _, ref_grads = loss_and_grads(kernels["explicit"], *f32)
        out = {"choice": choice.kernel, "reason": choice.reason,
               "shape": [batch, seq, heads, head_dim], "kernels": {}}
        for name, fn in kernels.items():
            entry = {}
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    step = jax.jit(functools_partial(loss_and_grads, fn))
                    compiled = step.lower(q, k, v).compile()
                entry["fell_back"] = any("using XLA" in str(w.message) for w in caught)
                entry["cudnn_call"] = "cudnn" in compiled.as_text().lower()
                _, grads = compiled(q, k, v)
                value = jax.jit(fn)(q, k, v).astype(jnp.float32)
                rows = real[:, :, None, None]
                entry["max_err_out"] = float(jnp.max(jnp.abs(value - ref_out) * rows))
                entry["max_err_grad"] = max(float(jnp.max(jnp.abs(g.astype(jnp.float32) - r)))
                                            for g, r in zip(grads, ref_grads))
                median, _ = timed_median(lambda: jax.block_until_ready(compiled(q, k, v)),
                                         warmup=2, min_timed=5, max_timed=50, cap_s=1.0)
                entry["fwd_bwd_ms"] = 1e3 * median
            except Exception as e:  # noqa: BLE001 - one kernel failing is a finding
                entry["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            out["kernels"][name] = entry
        return out

    def host_path(seq, batch, steps, mask_fn=None):
        """tokens/s of the host path alone: next(iterator) -> global_batch (-> mask on CPU)."""
        it = BatchIterator(dataset(seq, batch), batch, seed=0)
        mesh = mesh_lib.data_mesh()
        cpu = jax.devices("cpu")[0]
        masked = jax.jit(mask_fn) if mask_fn else None
        key = jax.random.PRNGKey(0)

        def one():
            host = next(it)
            if masked is not None:
                on_cpu = jax.device_put({k: host[k] for k in ("token_ids", "attention_mask")}, cpu)
                out = masked(key, on_cpu["token_ids"], on_cpu["attention_mask"])
                host = {**host, **jax.device_get(out)}
            jax.block_until_ready(mesh_lib.global_batch(host, mesh))

        median, _ = timed_median(one, warmup=2, min_timed=steps, max_timed=max(steps, 20),
                                 cap_s=2.0)
        return batch * seq / median

    def input_row(row, plan):
        seq, batch = row["seq"], row["batch"]
        mask_fn = train_step.steps.make_mask_fn(train_step.synthetic_vocab(), rate=0.15,
                                                max_predictions=row["predictions"],
                                                whole_word=False)
        return {"seq": seq, "batch": batch,
                "host_tokens_per_s": host_path(seq, batch, 10),
                "host_masking_tokens_per_s": host_path(seq, batch, 5, mask_fn)}

    def mlm_row(row, plan):
        overrides = dict(row["sizes"]) if plan["dry_run"] else {}

        def run(batch):
            t0 = time.perf_counter()
            mlm = train_step.make_mlm_step(row["variant"], batch, row["seq"], row["predictions"],
                                           dtype=row["dtype"], **overrides)
            mlm.step()  # compile + first step
            compile_s = time.perf_counter() - t0

            def chained():
                for _ in range(timing["chain"]):
                    mlm.holder["state"], metrics = mlm.train(mlm.holder["state"], mlm.batch,
                                                             mlm.rng)
                jax.block_until_ready(metrics["loss"])

            median, timed = timed_median(chained, **{k: timing[k] for k in (
                "warmup", "min_timed", "max_timed", "cap_s")})
            median /= timing["chain"]
            # Fed by the host path, as bertlab.train.pretrain's loop feeds it.
            it = BatchIterator(dataset(row["seq"], batch), batch, seed=1)
            mesh = mesh_lib.data_mesh()
            n = timing["loop_steps"]
            t0 = time.perf_counter()
            for _ in range(n):
                mlm.holder["state"], metrics = mlm.train(
                    mlm.holder["state"], mesh_lib.global_batch(next(it), mesh), mlm.rng)
            loss = float(jax.block_until_ready(metrics["loss"]))
            loop_s = (time.perf_counter() - t0) / n
            del mlm
            return {"tokens_per_s": batch * row["seq"] / median, "step_ms": 1e3 * median,
                    "timed_steps": timed * timing["chain"], "compile_s": compile_s,
                    "loop_tokens_per_s": batch * row["seq"] / loop_s, "loss": loss}

        return with_batch_halving(run, row, cleanup=jax.clear_caches)

    def tune_row(row, plan):
        calls = finetune_infer.bertlab_calls(row["build_variant"], row["batch"],
                                             row["infer_batches"], row["seq"], row["dtype"])
        out = {}
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()  # compile
            compile_s = time.perf_counter() - t0
            median, _ = timed_median(call, **{k: timing[k] for k in (
                "warmup", "min_timed", "max_timed", "cap_s")})
            size = row["batch"] if name == "train" else int(name[len("infer"):])
            out[name] = {"seq_per_s": size / median, "batch": size, "compile_s": compile_s}
        return {"loops": out}

    try:
        run_rows(group, plan, results_path, {"env": env, "peak": peak, "input": input_row,
                                             "attention": attention_row, "mlm": mlm_row,
                                             "tune": tune_row})
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)


# ---- the PyTorch worker --------------------------------------------------------------------

def torch_worker(group: dict, plan: dict, results_path: str) -> None:
    import numpy as np
    import torch
    import transformers
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    # float32 matmuls on TF32 tensor cores, as XLA does by default on the GPU.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    timing = plan["timing"]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def hf_config(sizes: dict, seq: int, **extra) -> BertConfig:
        return BertConfig(vocab_size=VOCAB_SIZE, hidden_size=sizes["hidden_size"],
                          num_hidden_layers=sizes["num_layers"],
                          num_attention_heads=sizes["num_heads"],
                          intermediate_size=sizes["intermediate_size"],
                          max_position_embeddings=max(512, seq), attn_implementation="sdpa",
                          **extra)

    def autocast(dtype: str):
        return torch.autocast(device_type=device, dtype=torch.bfloat16,
                              enabled=dtype == "bfloat16")

    def inputs(batch: int, seq: int, seed: int = 0) -> dict:
        rng = np.random.default_rng(seed)
        ids = rng.integers(5, VOCAB_SIZE, (batch, seq))
        ids[:, 0], ids[:, -1] = 2, 3
        segments = np.zeros((batch, seq), np.int64)
        segments[:, seq // 2:] = 1
        as_t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)
        return {"input_ids": as_t(ids), "token_type_ids": as_t(segments),
                "attention_mask": as_t(np.ones((batch, seq)))}

    def maybe_compile(model):
        return torch.compile(model) if plan["torch_compile"] else model

    def env(row, plan):
        return {"torch": torch.__version__, "transformers": transformers.__version__,
                "cuda": torch.version.cuda, "device": (torch.cuda.get_device_name(0) if cuda
                                                       else platform.processor() or "cpu"),
                "attn_implementation": "sdpa", "torch_compile": plan["torch_compile"]}

    def peak(row, plan):
        size = 1024 if plan["dry_run"] or not cuda else 8192
        out = {}
        for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            median, _ = timed_median(lambda: (a @ b, sync()), warmup=3, min_timed=5,
                                     max_timed=10, cap_s=2.0)
            out[name] = 2.0 * size ** 3 / median
            del a, b
        return {"flops": out}

    def mlm_row(row, plan):
        def run(batch):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            model = BertForMaskedLM(hf_config(row["sizes"], row["seq"])).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01,
                                    fused=cuda)
            forward = maybe_compile(model)
            data = inputs(batch, row["seq"])
            ids = data["input_ids"]
            labels = torch.where(torch.rand(ids.shape, device=device) < 0.15, ids,
                                 torch.full_like(ids, -100))

            def step():
                with autocast(row["dtype"]):
                    loss = forward(**data, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

            def chained():  # as the JAX side: `chain` steps, then one wait
                for _ in range(timing["chain"]):
                    step()
                sync()

            chained()
            compile_s = time.perf_counter() - t0
            median, timed = timed_median(chained, **{k: timing[k] for k in (
                "warmup", "min_timed", "max_timed", "cap_s")})
            median /= timing["chain"]
            del model, opt, forward
            if cuda:
                torch.cuda.empty_cache()
            return {"tokens_per_s": batch * row["seq"] / median, "step_ms": 1e3 * median,
                    "timed_steps": timed * timing["chain"], "compile_s": compile_s}

        empty_cache = torch.cuda.empty_cache if cuda else None
        try:
            return with_batch_halving(run, row, cleanup=empty_cache)
        finally:
            if cuda:
                torch.cuda.empty_cache()

    def tune_row(row, plan):
        torch.manual_seed(0)
        model = BertForSequenceClassification(
            hf_config(row["sizes"], row["seq"], num_labels=NUM_LABELS)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-6, weight_decay=0.01,
                                fused=cuda)
        forward = maybe_compile(model)
        data = inputs(row["batch"], row["seq"])
        labels = torch.randint(0, NUM_LABELS, (row["batch"],), device=device)

        def train():
            model.train()
            with autocast(row["dtype"]):
                loss = forward(**data, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()

        calls = {"train": (train, row["batch"])}
        for size in row["infer_batches"]:
            infer_data = inputs(size, row["seq"], seed=2)

            def infer(d=infer_data):
                model.eval()
                with torch.inference_mode(), autocast(row["dtype"]):
                    forward(**d).logits
                sync()

            calls[f"infer{size}"] = (infer, size)
        out = {}
        for name, (call, size) in calls.items():
            t0 = time.perf_counter()
            call()
            compile_s = time.perf_counter() - t0
            median, _ = timed_median(call, **{k: timing[k] for k in (
                "warmup", "min_timed", "max_timed", "cap_s")})
            out[name] = {"seq_per_s": size / median, "batch": size, "compile_s": compile_s}
        del model, opt, forward
        if cuda:
            torch.cuda.empty_cache()
        return {"loops": out}

    run_rows(group, plan, results_path, {"env": env, "peak": peak, "mlm": mlm_row,
                                         "tune": tune_row})


# ---- the orchestrator ----------------------------------------------------------------------

def run_group(group: dict, plan_path: str, out_dir: str, python: str, grace_s: float) -> dict:
    """Runs one worker process for the group, killed at its budget + grace; returns a summary."""
    results = os.path.join(out_dir, f"raw-{group['name']}.jsonl")
    log = os.path.join(out_dir, f"log-{group['name']}.txt")
    if os.path.exists(results):
        os.remove(results)
    command = [python, os.path.abspath(__file__), "--worker", group["name"], "--plan", plan_path,
               "--results", results]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if group["worker"] == "torch":
        # transformers would import TensorFlow and Flax too where installed (~20 s here).
        env.update(USE_TF="0", USE_FLAX="0")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.time()
    print(f"[{group['name']}] {shlex.join(command)}  (budget {group['budget_s']:.0f} s)",
          flush=True)
    with open(log, "w", encoding="utf-8") as f:
        try:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env,
                                  timeout=group["budget_s"] + grace_s).returncode
        except subprocess.TimeoutExpired:
            code = "killed at its time limit"
        except OSError as e:
            code = f"could not start: {e}"
    summary = {"group": group["name"], "exit": code, "wall_s": round(time.time() - start, 1)}
    print(f"[{group['name']}] done: {summary}", flush=True)
    return summary


def read_results(out_dir: str, groups: list) -> dict:
    found = {}
    for group in groups:
        path = os.path.join(out_dir, f"raw-{group['name']}.jsonl")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    found[(group["name"], record["kind"], record.get("id"))] = record
    return found


def fmt(value, spec: str = ",.0f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def build_report(plan: dict, results: dict, summaries: list, command: str) -> tuple[str, dict]:
    """(markdown, JSON-able dict) of everything measured."""
    config = load_config_module()
    get = lambda group, kind, rid=None: results.get((group, kind, rid))
    jax_env = (get("jax", "env") or {})
    torch_env = (get("torch", "env") or {})
    device_name = jax_env.get("device") or torch_env.get("device") or "unknown"
    jax_peak = (get("jax", "peak") or {}).get("flops", {})
    torch_peak = (get("torch", "peak") or {}).get("flops", {})
    measured = {d: max([p[d] for p in (jax_peak, torch_peak) if p.get(d)], default=None)
                for d in DTYPES}
    vendor = {d: vendor_peak(device_name, d) for d in DTYPES}

    def flops(row, ours: bool) -> float:
        cfg = config.BertConfig(vocab_size=VOCAB_SIZE, **row["sizes"])
        return config.flops_per_token(cfg, row["seq"], row["predictions"] if ours else None)

    groups = {g["name"]: g for g in plan["groups"]}
    jax_rows = groups["jax"]["rows"]
    mlm_rows = sorted([r for r in jax_rows if r["kind"] == "mlm"],
                      key=lambda r: (MLM_SHAPES.index((r["variant"], r["paper_seq"])),
                                     DTYPES.index(r["dtype"])))
    inputs = {(r["seq"], r["batch"]): get("jax", "input", r["id"]) for r in jax_rows
              if r["kind"] == "input"}
    lines, data = [], {"device": device_name, "jax": jax_env, "torch": torch_env,
                       "peaks": {"jax": jax_peak, "torch": torch_peak, "measured": measured,
                                 "vendor_dense": vendor},
                       "workers": summaries, "mlm": [], "input": [], "tune": [],
                       "dry_run": plan["dry_run"], "command": command}
    title = "Accelerator table" + (" — DRY RUN at toy sizes (not a measurement)"
                                   if plan["dry_run"] else "")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [f"## {title}", "",
              f"Device: **{device_name}** ({jax_env.get('platform', '?')}, compute capability "
              f"{jax_env.get('compute_capability')}, cuDNN {jax_env.get('cudnn_version')}); "
              f"jax {jax_env.get('jax', '?')}, flax {jax_env.get('flax', '?')}, torch "
              f"{torch_env.get('torch', '—')} (CUDA {torch_env.get('cuda')}), transformers "
              f"{torch_env.get('transformers', '—')}; {when}; host load average "
              f"{plan.get('load_start', '?')} at the start, {plan.get('load_end', '?')} at the "
              f"end. Command: `{command}`", ""]
    if plan["dry_run"]:
        lines += ["Every variant below is the same toy model "
                  f"({', '.join(f'{k}={v}' for k, v in DRY_SIZES.items())}, vocab {VOCAB_SIZE}), "
                  f"seq 128 -> {DRY_SEQ[128]}, 512 -> {DRY_SEQ[512]}, batch 4, a few steps: "
                  "this run checks the script, its figures mean nothing.", ""]

    # peaks
    lines += ["### Matmul peaks", "",
              "| dtype | JAX matmul | PyTorch matmul | measured peak (best) | vendor dense peak |",
              "|---|---:|---:|---:|---:|"]
    for d in DTYPES:
        label = "float32 (TF32)" if jax_env.get("platform") == "gpu" else d
        lines.append(f"| {label} | {fmt(jax_peak.get(d) and jax_peak[d] / 1e12, ',.1f')} | "
                     f"{fmt(torch_peak.get(d) and torch_peak[d] / 1e12, ',.1f')} | "
                     f"{fmt(measured[d] and measured[d] / 1e12, ',.1f')} | "
                     f"{fmt(vendor[d] and vendor[d] / 1e12, ',.1f')} |")
    lines += ["", "TFLOP/s. Vendor figures: NVIDIA datasheets' dense tensor-core peaks "
              f"(key {vendor_key(device_name)!r}; see VENDOR_DENSE_TFLOPS in device_table.py).",
              ""]

    # fused attention
    attention = get("jax", "attention") or {}
    if attention.get("status") == "ok":
        lines += [f"### Fused attention: bf16, (B, T, N, D) = {tuple(attention['shape'])}, "
                  f"padding mask, forward + backward", "",
                  f"attention_select.choose picks **{attention['choice']}** here "
                  f"({attention['reason']}).", "",
                  "| kernel | fwd+bwd ms | max err output | max err input grads | cuDNN call in "
                  "HLO | fell back to XLA |", "|---|---:|---:|---:|---|---|"]
        for name, entry in attention["kernels"].items():
            if "error" in entry:
                lines.append(f"| {name} | error: {entry['error'][:120]} | | | | |")
                continue
            lines.append(f"| {name} | {fmt(entry['fwd_bwd_ms'], '.3f')} | "
                         f"{fmt(entry['max_err_out'], '.2e')} | {fmt(entry['max_err_grad'], '.2e')}"
                         f" | {'yes' if entry['cudnn_call'] else 'no'} | "
                         f"{'yes' if entry['fell_back'] else 'no'} |")
        lines += ["", "Errors against float32 explicit attention on the same (bf16-rounded) "
                  "inputs, real query rows; explicit = bertlab.models.attention's kernel.", ""]
    data["attention"] = attention

    # input pipeline
    lines += ["### Host input pipeline", "",
              "| seq | batch | host path tokens/s | with masking on the host CPU tokens/s |",
              "|---:|---:|---:|---:|"]
    for (seq, batch), rec in sorted(inputs.items()):
        ok = rec and rec.get("status") == "ok"
        lines.append(f"| {seq} | {batch} | {fmt(ok and rec['host_tokens_per_s'] or None)} | "
                     f"{fmt(ok and rec['host_masking_tokens_per_s'] or None)} |")
        data["input"].append({"seq": seq, "batch": batch, **(rec or {})})
    lines += ["", "Host path: BatchIterator over memory-mapped shards -> take (pad) -> "
              "global_batch onto the device, blocked per batch; masking normally runs inside the "
              "jitted step on the device.", ""]

    # MLM
    lines += ["### MLM train step (AdamW, clipping, dropout 0.1, NSP head; seq 128: 20 masked "
              "positions, seq 512: 80)", "",
              "| variant | seq | batch | dtype | bertlab tokens/s | MFU measured | MFU vendor | "
              "PyTorch tokens/s | PyTorch MFU measured | × PyTorch | fed by host path "
              "tokens/s | bound | compile s |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    by_shape = {}
    for row in mlm_rows:
        ours = get("jax", "mlm", row["id"]) or {}
        peer = get("torch", "mlm", row["id"]) or {}
        ok, peer_ok = ours.get("status") == "ok", peer.get("status") == "ok"
        rate = ours.get("tokens_per_s") if ok else None
        peer_rate = peer.get("tokens_per_s") if peer_ok else None
        mfu = rate and measured[row["dtype"]] and flops(row, True) * rate / measured[row["dtype"]]
        mfu_v = rate and vendor[row["dtype"]] and flops(row, True) * rate / vendor[row["dtype"]]
        peer_mfu = (peer_rate and measured[row["dtype"]]
                    and flops(row, False) * peer_rate / measured[row["dtype"]])
        batch = ours.get("batch", row["batch"])
        host = inputs.get((row["seq"], row["batch"])) or {}
        host_rate = host.get("host_tokens_per_s")
        bound = "—"
        if rate and host_rate:
            bound = (f"input ({host_rate / rate:.2f}× step)" if host_rate < rate
                     else f"device (host {host_rate / rate:.1f}× step)")
        status = "" if ok else f" ({ours.get('status', 'not reached')})"
        seq_label = f"{row['seq']}" + (f" (as {row['paper_seq']})"
                                       if row["seq"] != row["paper_seq"] else "")
        lines.append(
            f"| {row['variant']}{status} | {seq_label} | {batch} | {row['dtype']} | "
            f"{fmt(rate)} | {fmt(mfu, '.1%')} | {fmt(mfu_v, '.1%')} | {fmt(peer_rate)} | "
            f"{fmt(peer_mfu, '.1%')} | {fmt(rate and peer_rate and rate / peer_rate, '.2f')}"
            f"{'×' if rate and peer_rate else ''} | {fmt(ours.get('loop_tokens_per_s'))} | "
            f"{bound} | {fmt(ours.get('compile_s'), '.1f')} |")
        entry = {**{k: row[k] for k in ("variant", "seq", "paper_seq", "dtype", "predictions")},
                 "batch": batch, "bertlab": ours, "torch": peer, "mfu_measured": mfu,
                 "mfu_vendor": mfu_v, "torch_mfu_measured": peer_mfu, "bound": bound,
                 "flops_per_token": flops(row, True), "torch_flops_per_token": flops(row, False)}
        data["mlm"].append(entry)
        by_shape.setdefault((row["variant"], row["seq"], row["paper_seq"]), {})[row["dtype"]] = (
            rate, peer_rate)
    lines += ["", "MFU measured: model FLOPs/token × tokens/s over the measured matmul peak of "
              "the row's dtype; vendor: over the datasheet's dense peak (float32 rows: TF32). "
              "The peer computes vocabulary logits at every position, so its FLOPs/token are "
              "higher (counted so). Fed by host path: the same step taking each batch from "
              "the host pipeline, as bertlab pretrain does. Bound: input when the host path "
              "alone is slower than the step.", ""]
    lines += ["| variant | seq | bertlab bf16 / f32 | PyTorch bf16 / f32 |", "|---|---:|---:|---:|"]
    for (variant, seq, paper_seq), pair in by_shape.items():
        (o16, p16), (o32, p32) = pair.get("bfloat16", (None, None)), pair.get("float32",
                                                                                (None, None))
        seq_label = f"{seq}" + (f" (as {paper_seq})" if seq != paper_seq else "")
        lines.append(f"| {variant} | {seq_label} | {fmt(o16 and o32 and o16 / o32, '.2f')} | "
                     f"{fmt(p16 and p32 and p16 / p32, '.2f')} |")
    lines.append("")

    # fine-tuning and inference
    lines += ["### Fine-tuning step and inference (sequence classification, 2 labels)", "",
              "| variant | loop | batch | dtype | bertlab seq/s | PyTorch seq/s | × PyTorch |",
              "|---|---|---:|---|---:|---:|---:|"]
    for row in groups["jax-tune"]["rows"]:
        ours = get("jax-tune", "tune", row["id"]) or {}
        peer = get("torch", "tune", row["id"]) or {}
        names = ["train"] + [f"infer{b}" for b in row["infer_batches"]]
        for name in names:
            o = (ours.get("loops") or {}).get(name, {}).get("seq_per_s")
            p = (peer.get("loops") or {}).get(name, {}).get("seq_per_s")
            size = row["batch"] if name == "train" else int(name[len("infer"):])
            status = "" if ours.get("status") == "ok" else f" ({ours.get('status', 'not reached')})"
            lines.append(f"| {row['variant']}{status} | "
                         f"{'fine-tune step' if name == 'train' else 'inference'} | {size} | "
                         f"{row['dtype']} | {fmt(o, ',.1f')} | {fmt(p, ',.1f')} | "
                         f"{fmt(o and p and o / p, '.2f')}{'×' if o and p else ''} |")
        data["tune"].append({"variant": row["variant"], "dtype": row["dtype"], "bertlab": ours,
                             "torch": peer})
    lines.append("")

    # targets
    base = {r["dtype"]: r for r in data["mlm"] if r["variant"] == "base" and r["paper_seq"] == 128}
    b16, b32 = base.get("bfloat16", {}), base.get("float32", {})
    r16 = b16.get("bertlab", {}).get("tokens_per_s")
    r32 = b32.get("bertlab", {}).get("tokens_per_s")
    p16 = b16.get("torch", {}).get("tokens_per_s")
    check = lambda ok: "—" if ok is None else ("yes" if ok else "no")
    lines += ["### Targets (issue 18)", "", "| target | figure | met? |", "|---|---:|---|",
              f"| base bf16 MFU ≥ 50 % of the measured bf16 peak | "
              f"{fmt(b16.get('mfu_measured'), '.1%')} | "
              f"{check(b16.get('mfu_measured') and b16['mfu_measured'] >= 0.5)} |",
              f"| base bf16 ≥ 2× the PyTorch bf16 peer | "
              f"{fmt(r16 and p16 and r16 / p16, '.2f')} | "
              f"{check(r16 and p16 and r16 / p16 >= 2)} |",
              f"| base bf16 ≥ 1.8× float32 | {fmt(r16 and r32 and r16 / r32, '.2f')} | "
              f"{check(r16 and r32 and r16 / r32 >= 1.8)} |"]
    for variant in ("tiny", "mini"):
        rows = [r for r in data["mlm"] if r["variant"] == variant]
        bounds = ", ".join(f"{r['dtype']}: {r['bound']}" for r in rows) or "—"
        lines.append(f"| {variant} reaches the input pipeline's limit (which bound holds) | "
                     f"{bounds} | — |")
    lines.append("")

    problems = [r for r in results.values() if r.get("status") in ("error", "skipped")]
    lines += ["### Workers", "", "| worker | exit | wall s |", "|---|---|---:|"]
    lines += [f"| {s['group']} | {s['exit']} | {s['wall_s']} |" for s in summaries]
    if problems:
        lines += ["", "Rows not measured:", ""]
        lines += [f"- {r['group']} {r['kind']} #{r.get('id')}: {r['status']}: "
                  f"{r.get('error') or r.get('reason')}" for r in problems]
    planned = {(g["name"], r["kind"], r.get("id")) for g in plan["groups"] for r in g["rows"]}
    missing = sorted(planned - set(results), key=str)
    if missing:
        lines += ["", "Rows not reached (worker ended first): " +
                  ", ".join(f"{g} {k} #{i}" for g, k, i in missing)]
    lines.append("")
    return "\n".join(lines), data


def finish(out_dir: str, plan: dict, summaries: list, command: str, start: float) -> None:
    """The report from OUT_DIR/work: device_table.md and .json, then work/ packed."""
    import shutil
    import tarfile

    work = os.path.join(out_dir, "work")
    results = read_results(work, plan["groups"])
    plan["load_end"] = round(os.getloadavg()[0], 1)
    markdown, data = build_report(plan, results, summaries, command)
    data["wall_s"] = round(time.time() - start, 1)
    with open(os.path.join(out_dir, "device_table.md"), "w", encoding="utf-8") as f:
        f.write(markdown + f"\nWhole run: {data['wall_s']} s.\n")
    with open(os.path.join(out_dir, "device_table.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
    with tarfile.open(os.path.join(out_dir, "work.tar.gz"), "w:gz") as tar:
        tar.add(work, arcname="work")
    shutil.rmtree(work, ignore_errors=True)
    print(markdown)
    print(f"whole run: {data['wall_s']} s; written to {out_dir}/device_table.md and .json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--dry-run", action="store_true",
                        help="every row at toy sizes for a few steps (any device, ~3 minutes)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="seconds for all rows together, shared 63/12/25 %% by the JAX MLM, "
                             "JAX fine-tuning and PyTorch workers (default 420; dry run 1500)")
    parser.add_argument("--variants", nargs="+", default=list(MLM_VARIANTS))
    parser.add_argument("--tune-variants", nargs="+", default=list(TUNE_VARIANTS))
    parser.add_argument("--python", default=sys.executable, help="the JAX workers' interpreter")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the PyTorch worker's interpreter (torch + transformers there)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="torch.compile the peer (slower start, maybe faster steps)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from OUT_DIR/work (after a run was stopped)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        with open(args.plan, encoding="utf-8") as f:
            plan = json.load(f)
        group = next(g for g in plan["groups"] if g["name"] == args.worker)
        (jax_worker if group["worker"] == "jax" else torch_worker)(group, plan, args.results)
        return 0

    if not args.out_dir:
        parser.error("OUT_DIR is required")
    command = "python experiments/bench/device_table.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    if args.report_only:
        with open(os.path.join(args.out_dir, "work", "plan.json"), encoding="utf-8") as f:
            finish(args.out_dir, json.load(f), [], command, time.time())
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    # Workers' raw JSON lines, logs and the plan go to OUT_DIR/work, packed into work.tar.gz at
    # the end (few files come back from a device machine); compiled programs to a cache outside.
    work = os.path.join(args.out_dir, "work")
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("BERTLAB_COMPILATION_CACHE",
                          os.path.join(tempfile.gettempdir(), "bertlab-device-table-xla"))
    plan = make_plan(args)
    plan_path = os.path.join(work, "plan.json")
    with open(plan_path, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=1)
    start = time.time()
    plan["load_start"] = round(os.getloadavg()[0], 1)
    summaries = []
    for group in plan["groups"]:
        python = args.torch_python if group["worker"] == "torch" else args.python
        summaries.append(run_group(group, plan_path, work, python,
                                   grace_s=20.0 if not args.dry_run else 60.0))
    finish(args.out_dir, plan, summaries, command, start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
