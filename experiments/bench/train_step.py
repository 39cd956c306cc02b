"""MLM train-step throughput: bertlab against transformers on the same machine, in one run.

Every figure is tokens/s (B * T / step time, median of timed steps after warm-up) for the same
architecture, batch, sequence length and optimiser (AdamW), plus MFU = FLOPs per token (from
bertlab.models.flops_per_token, counting the MLM head only where it is computed) x tokens/s over
the measured matmul peak of the device. Peers run when importable:
  - transformers FlaxBertForMaskedLM (4.57.x; computes vocabulary logits at every position),
  - transformers BertForMaskedLM on torch (CPU or CUDA; likewise every position).

    python experiments/bench/train_step.py --variants tiny mini small base            # CPU here
    python experiments/bench/train_step.py --variants tiny base --batch 256 --dtype bfloat16  # GPU

Prints a markdown table; --out appends it with the command and the machine to a markdown file.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bertlab.train import mesh as mesh_lib  # noqa: E402
from bertlab.train import optimizer as optimizer_lib  # noqa: E402
from bertlab.train import steps
from bertlab.train import state as train_state  # noqa: E402
from bertlab.models import BertForPreTraining, variant_config  # noqa: E402
from bertlab.models.config import flops_per_token  # noqa: E402
from bertlab.train.peak_flops import measure_matmul_flops  # noqa: E402
from bertlab.text.tokenizer import SPECIAL_TOKENS, vocab_from_tokens  # noqa: E402
from markdown_out import append_table  # noqa: E402

VOCAB_SIZE = 30522


def synthetic_vocab(size: int = VOCAB_SIZE):
    return vocab_from_tokens(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(size - len(SPECIAL_TOKENS))])


def synthetic_batch(batch: int, seq: int, vocab_size: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=(batch, seq), dtype=np.int32)
    token_ids[:, 0], token_ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    segment_ids = np.zeros((batch, seq), np.int32)
    segment_ids[:, seq // 2:] = 1
    return {"token_ids": token_ids, "segment_ids": segment_ids,
            "attention_mask": np.ones((batch, seq), np.int32),
            "nsp_labels": rng.integers(0, 2, size=(batch,), dtype=np.int32)}


def time_steps(step, warmup: int, timed: int) -> float:
    """Median seconds per call of `step()` (which must block until the device is done)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class MlmStep(NamedTuple):
    """Everything one timed bertlab MLM train step needs (profile_step.py times its parts)."""
    model: BertForPreTraining
    mask_fn: object
    train: object
    holder: dict      # {"state": TrainState}, replaced by every call of step()
    batch: dict
    rng: jax.Array

    def step(self) -> None:
        self.holder["state"], metrics = self.train(self.holder["state"], self.batch, self.rng)
        jax.block_until_ready(metrics["loss"])


def make_mlm_step(variant: str, batch: int, seq: int, predictions: int, *, mask_fn=None,
                  with_nsp: bool = True, **overrides) -> MlmStep:
    """Our MLM+NSP train step (AdamW, 15 % masking) on a synthetic batch, compiled on first call.
    mask_fn replaces the on-device masking; overrides go to the model config."""
    config = variant_config(variant, vocab_size=VOCAB_SIZE, **overrides)
    mesh = mesh_lib.data_mesh()
    model = BertForPreTraining(config, with_nsp=with_nsp)
    tx, schedule = optimizer_lib.make_optimizer("adamw", lr=1e-4, warmup_steps=10, num_steps=10_000,
                                                weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6,
                                                clip_norm=1.0)
    params = train_state.init_params(model, jax.random.PRNGKey(0), seq_len=seq,
                                     num_predictions=predictions, mesh=mesh)
    state = train_state.create_train_state(model, tx, params, mesh=mesh)
    mask_fn = mask_fn or steps.make_mask_fn(synthetic_vocab(), rate=0.15,
                                            max_predictions=predictions, whole_word=False)
    train = steps.jit_train_step(mask_fn=mask_fn, schedule=schedule, grad_accum_steps=1,
                                 with_nsp=with_nsp, mesh=mesh)
    return MlmStep(model, mask_fn, train, {"state": state},
                   mesh_lib.global_batch(synthetic_batch(batch, seq, VOCAB_SIZE), mesh),
                   jax.random.PRNGKey(1))


def bench_bertlab(variant: str, batch: int, seq: int, predictions: int, dtype: str,
                  warmup: int, timed: int) -> float:
    mlm = make_mlm_step(variant, batch, seq, predictions, dtype=dtype)
    return batch * seq / time_steps(mlm.step, warmup, timed)


def bench_hf_flax(variant: str, batch: int, seq: int, warmup: int, timed: int) -> float | None:
    try:
        import optax
        from transformers import BertConfig as HFConfig, FlaxBertForMaskedLM
    except Exception:  # transformers >= 5 has no Flax BERT
        return None
    ours = variant_config(variant, vocab_size=VOCAB_SIZE)
    hf_config = HFConfig(vocab_size=VOCAB_SIZE, hidden_size=ours.hidden_size,
                         num_hidden_layers=ours.num_layers, num_attention_heads=ours.num_heads,
                         intermediate_size=ours.intermediate_size)
    model = FlaxBertForMaskedLM(hf_config, seed=0)
    tx = optax.adamw(1e-4, eps=1e-6, weight_decay=0.01)
    params = jax.tree_util.tree_map(jnp.array, model.params)  # own buffers, safe to donate
    opt_state = tx.init(params)
    data = synthetic_batch(batch, seq, VOCAB_SIZE)
    labels = np.where(np.random.default_rng(1).random((batch, seq)) < 0.15, data["token_ids"], -100)

    # Donated like bertlab's state (transformers' Flax examples donate theirs too).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train(params, opt_state, dropout_rng):
        def loss_fn(p):
            logits = model(data["token_ids"], data["attention_mask"], data["segment_ids"],
                           params=p, dropout_rng=dropout_rng, train=True).logits
            mask = labels >= 0
            logp = jax.nn.log_softmax(logits.astype(jnp.float32))
            nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
            return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    holder = {"p": params, "o": opt_state}
    key = jax.random.PRNGKey(0)

    def step():
        holder["p"], holder["o"], loss = train(holder["p"], holder["o"], key)
        jax.block_until_ready(loss)

    return batch * seq / time_steps(step, warmup, timed)


def bench_torch(variant: str, batch: int, seq: int, dtype: str, warmup: int, timed: int
                ) -> float | None:
    try:
        import torch
        from transformers import BertConfig as HFConfig, BertForMaskedLM
    except Exception:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = variant_config(variant, vocab_size=VOCAB_SIZE)
    hf_config = HFConfig(vocab_size=VOCAB_SIZE, hidden_size=ours.hidden_size,
                         num_hidden_layers=ours.num_layers, num_attention_heads=ours.num_heads,
                         intermediate_size=ours.intermediate_size)
    model = BertForMaskedLM(hf_config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-6, weight_decay=0.01)
    data = synthetic_batch(batch, seq, VOCAB_SIZE)
    labels = np.where(np.random.default_rng(1).random((batch, seq)) < 0.15, data["token_ids"], -100)
    inputs = {k: torch.as_tensor(data[k], dtype=torch.long, device=device)
              for k in ("token_ids", "attention_mask", "segment_ids")}
    torch_labels = torch.as_tensor(labels, dtype=torch.long, device=device)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step():
        with autocast:
            out = model(input_ids=inputs["token_ids"], attention_mask=inputs["attention_mask"],
                        token_type_ids=inputs["segment_ids"], labels=torch_labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return batch * seq / time_steps(step, warmup, timed)


def machine() -> str:
    device = jax.devices()[0]
    if device.platform == "cpu":
        model = ""
        try:
            with open("/proc/cpuinfo") as f:
                model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            pass
        return f"{model or platform.processor()}, {os.cpu_count()} cores (jax {jax.__version__}, cpu)"
    return f"{device.device_kind} (jax {jax.__version__}, {device.platform})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "mini", "small", "base"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=10)
    parser.add_argument("--peers", nargs="*", default=["flax", "torch"])
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    peak = measure_matmul_flops(dtype=args.dtype)
    rows = []
    header = ("| variant | bertlab tokens/s | MFU | transformers Flax | × Flax | "
              "transformers torch | × torch |")
    print(f"machine: {machine()}; matmul peak {peak / 1e9:,.0f} GFLOP/s ({args.dtype})")
    for variant in args.variants:
        ours = bench_bertlab(variant, args.batch, args.seq, args.predictions, args.dtype,
                             args.warmup, args.timed)
        config = variant_config(variant, vocab_size=VOCAB_SIZE)
        mfu = flops_per_token(config, args.seq, args.predictions, training=True) * ours / peak
        flax = (bench_hf_flax(variant, args.batch, args.seq, args.warmup, args.timed)
                if "flax" in args.peers and args.dtype == "float32" else None)
        torch_rate = (bench_torch(variant, args.batch, args.seq, args.dtype, args.warmup, args.timed)
                      if "torch" in args.peers else None)
        fmt = lambda v: f"{v:,.0f}" if v else "—"
        ratio = lambda v: f"{ours / v:.2f}×" if v else "—"
        row = (f"| {variant} | {ours:,.0f} | {mfu:.1%} | {fmt(flax)} | {ratio(flax)} | "
               f"{fmt(torch_rate)} | {ratio(torch_rate)} |")
        rows.append(row)
        print(row, flush=True)
    table = "\n".join([header, "|---|---:|---:|---:|---:|---:|---:|"] + rows)
    print("\n" + table)
    if args.out:
        append_table(args.out, "train_step.py", argv,
                     f"MLM train step, seq {args.seq}, batch {args.batch}, {args.dtype}, AdamW — "
                     f"{machine()}; matmul peak measured: {peak / 1e9:,.0f} GFLOP/s", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
