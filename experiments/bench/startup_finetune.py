"""Where a whole `bertlab finetune` process spends its time, before and after a change (issue 14,
item 6: start-up).

The case is issue 14's whole-process one: SST-2, 1,024 training sentences, all-MiniLM-L6-v2, 1
epoch, lr 1e-4, batch 32, from launch to exit. Each measurement is a fresh process:

  arms     "before": the code of --before (a git revision, checked out into a temporary
           worktree); "after": this working tree. Both run `python -m bertlab finetune` with
           the same interpreter, data and flags.
  caches   "cold": an empty compilation cache (every program compiles); "warm": the same
           command again on the cache the cold run left (another seed, a rerun, a sweep arm).
  rounds   arms and caches are interleaved round by round, so load on a shared machine falls
           on all of them alike; figures are medians over rounds.

Per run: wall seconds from launch to exit (this script's clock), the child's CPU seconds (user +
system of all its threads, from wait4: far less disturbed by other jobs than wall time), and the
run's eval loss / accuracy from summary.json (equal before and after, or the change is not only
about speed). The after arm also reports its phases (BERTLAB_PROFILE_STARTUP, see
bertlab/train/startup_profile.py): wall and process CPU per phase, and the background compiles
with the interval each took.

    .venv/bin/python experiments/bench/startup_finetune.py --before main --rounds 2 \\
        --out experiments/bench/startup_finetune.md
    .venv/bin/python experiments/bench/startup_finetune.py --before '' --peer   # after only + torch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
GLUE = os.path.join(SHARED, "data", "glue_data")
MINILM = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")


def finetune_argv(workdir: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "bertlab", "finetune", "--workdir", workdir,
            "--config", "configs/finetune.py:task=sst2", f"--config.model.init_from={MINILM}",
            f"--config.data.data_dir={GLUE}", "--config.data.max_train_examples=1024",
            "--config.train.epochs=1", "--config.optimizer.lr=1e-4"] + extra


def run_process(argv: list[str], cwd: str, env: dict, log_path: str) -> tuple[float, float, int]:
    """(wall seconds launch -> exit, CPU seconds of the child, exit status)."""
    with open(log_path, "w", encoding="utf-8") as log:
        started = time.time()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.time() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, child.returncode


def read_phases(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_of(workdir: str) -> str:
    path = os.path.join(workdir, "summary.json")
    if not os.path.exists(path):
        return "no summary.json"
    with open(path, encoding="utf-8") as f:
        summary = json.load(f)
    ev = summary.get("eval", {})
    return ", ".join(f"{name} {stats['median']:.6f}" for name, stats in sorted(ev.items()))


def metric_records(workdir: str) -> list[dict]:
    """seed_0/metrics.jsonl without its clock: train, train_epoch and eval records, which must
    be equal to the last bit before and after a start-up change."""
    path = os.path.join(workdir, "seed_0", "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


def checkout(rev: str, scratch: str) -> str:
    """A temporary worktree of `rev` (detached), for the before arm."""
    path = os.path.join(scratch, "before")
    subprocess.run(["git", "worktree", "add", "--detach", "--force", path, rev], cwd=REPO,
                   check=True, capture_output=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main",
                        help="git revision of the before arm ('' = after arm only)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--peer", action="store_true",
                        help="also run experiments/bench/peer_finetune_torch.py each round")
    parser.add_argument("--scratch", default="")
    parser.add_argument("--extra", default="", help="extra --config.K=V flags for both arms")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    scratch = args.scratch or tempfile.mkdtemp(prefix="startup_finetune_")
    os.makedirs(scratch, exist_ok=True)
    extra = args.extra.split() if args.extra else []
    arms = {"after": REPO}
    if args.before:
        arms = {"before": checkout(args.before, scratch), **arms}
    load_before = os.getloadavg()
    rows: dict[tuple[str, str], list[dict]] = {}
    phases: list[list[dict]] = []
    try:
        for round_index in range(args.rounds):
            for arm, cwd in arms.items():
                cache = os.path.join(scratch, f"cache-{arm}-{round_index}")
                for temperature in ("cold", "warm"):
                    workdir = os.path.join(scratch, f"wd-{arm}-{temperature}-{round_index}")
                    shutil.rmtree(workdir, ignore_errors=True)
                    profile = os.path.join(scratch,
                                           f"phases-{arm}-{temperature}-{round_index}.jsonl")
                    env = dict(os.environ, BERTLAB_COMPILATION_CACHE=cache,
                               BERTLAB_PROFILE_STARTUP=profile, PYTHONPATH=cwd)
                    log = os.path.join(scratch, f"log-{arm}-{temperature}-{round_index}.txt")
                    wall, cpu, status = run_process(finetune_argv(workdir, extra), cwd, env, log)
                    result = summary_of(workdir) if status == 0 else f"FAILED (see {log})"
                    rows.setdefault((arm, temperature), []).append(
                        {"wall": wall, "cpu": cpu, "result": result,
                         "losses": metric_records(workdir)})
                    if arm == "after":
                        phases.append(read_phases(profile))
                    print(f"round {round_index + 1} {arm} {temperature}: wall {wall:.1f} s, cpu "
                          f"{cpu:.1f} s, {result}; load {os.getloadavg()[0]:.1f}", flush=True)
            if args.peer:
                log = os.path.join(scratch, f"log-torch-{round_index}.txt")
                wall, cpu, status = run_process(
                    [sys.executable, os.path.join(REPO, "experiments", "bench",
                                                  "peer_finetune_torch.py"),
                     "--model", MINILM, "--data-dir", GLUE], REPO, dict(os.environ), log)
                rows.setdefault(("torch script", ""), []).append(
                    {"wall": wall, "cpu": cpu, "result": "" if status == 0 else "FAILED",
                     "losses": []})
                print(f"round {round_index + 1} torch: wall {wall:.1f} s, cpu {cpu:.1f} s",
                      flush=True)
    finally:
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", arms["before"]], cwd=REPO,
                           capture_output=True)
    load_after = os.getloadavg()
    text = report(rows, phases, args, argv, load_before, load_after)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


def report(rows, phases, args, argv, load_before, load_after) -> str:
    reference = rows.get(("torch script", ""))
    torch_wall = statistics.median(r["wall"] for r in reference) if reference else None
    lines = [f"| arm | compilation cache | wall s (median of {args.rounds}) | CPU s | "
             + ("/ torch wall | " if torch_wall else "")
             + "eval result | metrics.jsonl equal to before |",
             "|---|---|---:|---:|" + ("---:|" if torch_wall else "") + "---|---|"]
    before_losses = {t: rows.get(("before", t), [{}])[0].get("losses") for t in ("cold", "warm")}
    for (arm, temperature), runs in rows.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        same = ""
        if arm == "after" and before_losses.get(temperature) is not None:
            same = "yes" if all(r["losses"] == before_losses[temperature] for r in runs) else "NO"
        ratio = f"{wall / torch_wall:.2f}x | " if torch_wall else ""
        lines.append(f"| {arm} | {temperature} | {wall:.1f} | {cpu:.1f} | {ratio}"
                     f"{runs[0]['result']} | {same} |")
    table = "\n".join(lines)
    phase_table = phases_table(phases)
    command = "python experiments/bench/startup_finetune.py " + " ".join(argv or sys.argv[1:])
    return (f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `{command}`\n\n"
            f"Load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/"
            f"{load_before[2]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/"
            f"{load_after[2]:.1f}; {os.cpu_count()} CPUs.\n\n{table}\n\n{phase_table}\n")


def phases_table(phases: list[list[dict]]) -> str:
    """The after arm's cold and warm phases (median over rounds): wall and CPU per phase."""
    if not phases or not any(phases):
        return ""
    out = []
    for label, runs in (("cold", phases[0::2]), ("warm", phases[1::2])):
        runs = [r for r in runs if r]
        if not runs:
            continue
        names = [p["phase"] for p in runs[0]]
        lines = [f"Phases of the after arm, {label} cache (median over rounds; events are "
                 "background compiles, which overlap the phases; CPU is the whole process's):",
                 "", "| phase | kind | ends at s | wall s | process CPU s |",
                 "|---|---|---:|---:|---:|"]
        for i, name in enumerate(names):
            items = [r[i] for r in runs if i < len(r) and r[i]["phase"] == name]
            med = lambda key: statistics.median(item[key] for item in items)
            kind = items[0].get("kind", "phase")
            cpu = f"{med('cpu_seconds'):.2f}" if kind == "phase" else ""
            lines.append(f"| {name} | {kind} | {med('wall'):.2f} | {med('seconds'):.2f} | "
                         f"{cpu} |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
