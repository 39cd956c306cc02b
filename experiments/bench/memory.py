"""Peak resident memory of an MLM train step: bertlab against transformers' Flax BERT.

How large a model fits on a workstation is set by the peak, not the average, so each side runs
in a fresh process of its own (a child's ru_maxrss would otherwise include whatever its parent
held) and reports getrusage's ru_maxrss twice: after its imports (the frameworks' own share) and
after a compiled step plus two more. Both sides use AdamW on the same model, batch and sequence
length, with their state donated to the jitted step (transformers' Flax examples donate theirs).

    .venv/bin/python experiments/bench/memory.py --variants base
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(kind: str, variant: str, batch: int, seq: int) -> dict:
    sys.path.insert(0, HERE)
    import train_step  # bertlab, jax, flax, optax; transformers only inside bench_hf_flax

    if kind == "transformers":
        import transformers  # noqa: F401  (count its import, as a user of it pays it)
        from transformers import FlaxBertForMaskedLM  # noqa: F401
    after_imports = peak_mib()
    if kind == "bertlab":
        train_step.bench_bertlab(variant, batch, seq, 20, "float32", warmup=1, timed=2)
    else:
        train_step.bench_hf_flax(variant, batch, seq, warmup=1, timed=2)
    return {"imports": after_imports, "peak": peak_mib()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--child", choices=["bertlab", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.variants[0], args.batch, args.seq)))
        return 0

    lines = ["| variant | side | peak RSS after imports MiB | peak RSS of the train step MiB |",
             "|---|---|---:|---:|"]
    for variant in args.variants:
        peaks = {}
        for kind in ("bertlab", "transformers"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                                  "--variants", variant, "--batch", str(args.batch),
                                  "--seq", str(args.seq)], capture_output=True, text=True,
                                 cwd=REPO)
            if out.returncode:
                raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
            peaks[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            lines.append(f"| {variant} | {kind} | {peaks[kind]['imports']:,.0f} | "
                         f"{peaks[kind]['peak']:,.0f} |")
            print(lines[-1], flush=True)
        ratio = peaks["bertlab"]["peak"] / peaks["transformers"]["peak"]
        lines.append(f"| {variant} | bertlab / transformers | | {ratio:.2f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        from markdown_out import append_table
        append_table(args.out, "memory.py", argv,
                     f"Peak resident memory, MLM train step, batch {args.batch}, seq "
                     f"{args.seq}, float32, AdamW", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
