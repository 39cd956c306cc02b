"""Where a command's start-up goes: phase marks with wall-clock AND process CPU time.

A whole `bertlab finetune` is what a user waits for, and most of a short run is start-up
(interpreter, imports, data, tokenising, the checkpoint, compiling each program). With
BERTLAB_PROFILE_STARTUP set, the driver's `mark(name)` calls report, per phase, the wall time
since the previous mark and since the process was launched, and the process's CPU time (all
threads; on a shared machine CPU time is far less disturbed by other jobs than wall time):

    BERTLAB_PROFILE_STARTUP=1             one line per mark on stderr
    BERTLAB_PROFILE_STARTUP=/path/x.jsonl one JSON object per mark appended there (what
                                          experiments/bench/startup_finetune.py reads)

Programs compiled ahead of time in background threads (bertlab.train.programs) report with
`event(name, started)`: their own interval, since they overlap the main thread's phases.
Unset, every call is a no-op costing one dict lookup.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

ENV = "BERTLAB_PROFILE_STARTUP"
_lock = threading.Lock()
_last: dict[str, float] = {}


def enabled(environ=os.environ) -> bool:
    return bool(environ.get(ENV, "").strip()) and environ.get(ENV, "").strip() != "0"


def launch_time() -> float:
    """The process's start as a time.time() value (Linux: /proc/self/stat's start tick plus
    the boot time; 10 ms resolution), so the interpreter's own start-up is counted too.
    Elsewhere: the first call's time."""
    if "launch" in _last:
        return _last["launch"]
    launched = time.time()
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        launched = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    _last["launch"] = launched
    return launched


def _emit(record: dict) -> None:
    target = os.environ.get(ENV, "").strip()
    if target in ("1", "true", "yes", "on"):
        info = " ".join(f"{k}={v}" for k, v in record.items()
                        if k not in ("phase", "wall", "cpu", "seconds", "cpu_seconds", "kind"))
        print(f"[startup] {record['wall']:7.2f} s (cpu {record['cpu']:6.2f} s) "
              f"+{record['seconds']:6.2f} s (cpu +{record['cpu_seconds']:5.2f})  "
              f"{record['phase']} {info}".rstrip(), file=sys.stderr, flush=True)
        return
    with _lock, open(target, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def mark(phase: str, **info) -> None:
    """Ends the phase `phase` (begun at the previous mark, or at launch)."""
    if not enabled():
        return
    now, cpu = time.time(), time.process_time()
    launched = launch_time()
    with _lock:
        previous_wall = _last.get("wall", launched)
        previous_cpu = _last.get("cpu", 0.0)
        _last["wall"], _last["cpu"] = now, cpu
    _emit({"kind": "phase", "phase": phase, "wall": round(now - launched, 4),
           "cpu": round(cpu, 4), "seconds": round(now - previous_wall, 4),
           "cpu_seconds": round(cpu - previous_cpu, 4), "pid": os.getpid(), **info})


def event(name: str, started: float, **info) -> None:
    """An interval that overlaps the phases (a background compile), from `started` (its
    time.time() start) to now. No CPU time of its own: XLA compiles on threads of its own, so
    the calling thread's CPU time would miss most of it."""
    if not enabled():
        return
    now, launched = time.time(), launch_time()
    _emit({"kind": "event", "phase": name, "wall": round(now - launched, 4),
           "start": round(started - launched, 4), "cpu": round(time.process_time(), 4),
           "seconds": round(now - started, 4), "cpu_seconds": 0.0, "pid": os.getpid(),
           **info})
