"""Training-state checkpoints with orbax: what a run needs to continue bit for bit.

Layout (one directory per saved step, the newest `keep` kept):

    workdir/checkpoints/<step>/params/      the parameter tree (orbax, sharding-aware)
    workdir/checkpoints/<step>/opt_state/   the optimizer state tree
    workdir/checkpoints/<step>/meta/        JSON: step, base rng, data-iterator state, and the
                                            `compat` record (model shape, vocabulary, optimizer)
    workdir/checkpoints/<step>/bertlab_files.json
                                            size (and sha256, files up to 256 MiB) of every file
                                            above, written once the save is complete
    workdir/checkpoints_abandoned/<step>-<time>/
                                            a checkpoint that could not be read, moved aside
                                            (never deleted), with REASON.txt

params are a separate item so fine-tuning can restore them without knowing the optimizer.
`compat` is what a resumed run must agree with; it is checked before anything is restored or
written, and a mismatch names the key.

What bertlab promises on restore: a checkpoint that cannot be read (a truncated or damaged
file) is named with its step and the reason in one line, moved aside, and the newest one that
reads is used instead (`restore_latest`, `restore_params`). A damaged file is caught before any
restore by the file record when the checkpoint has one (sizes are always compared; contents
through sha256), else by orbax/tensorstore failing to read it. A checkpoint whose files are
intact but do not fit the model is an error, never a reason to move it aside.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import sys
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from bertlab.checkpoints.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
ABANDONED_DIR = "checkpoints_abandoned"
ITEMS = ("params", "opt_state", "meta")
FILES_RECORD = "bertlab_files.json"
CHECKSUM_MAX_BYTES = 256 << 20  # larger files: size only (hashing them costs seconds per save)
METRICS_FILE = "metrics.jsonl"  # = bertlab.train.metric_writer.METRICS_FILE
ABANDONED_METRICS_FILE = "metrics.abandoned.jsonl"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def step_dir(workdir: str, step: int) -> str:
    return os.path.join(checkpoint_dir(workdir), str(int(step)))


def _workdir_of(manager: ocp.CheckpointManager) -> str:
    return os.path.dirname(os.fspath(manager.directory))


def open_manager(workdir: str, *, keep: int | None = 3, async_save: bool = True,
                 create: bool = True) -> ocp.CheckpointManager:
    """The manager of workdir/checkpoints. Saves are forced by the caller (no save interval);
    keep=None keeps everything (for readers, which must never delete)."""
    if keep is not None and keep < 1:
        raise CheckpointError(f"train.keep_checkpoints must be >= 1, got {keep}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


# ------------------------------------------------------------------------------------ saving

def save(manager: ocp.CheckpointManager, step: int, *, params: Any, opt_state: Any,
         meta: Mapping[str, Any]) -> None:
    """Starts saving `step` (asynchronously when the manager is async: call wait() before exit).

    Arrays are copied off the device before this returns, so the caller may donate them. A full
    disk (or a read-only one) is an OSError naming the file, not orbax's RESOURCE_EXHAUSTED
    ValueError; the partial step directory is removed (it is not a checkpoint) and the earlier
    checkpoints stay as they were."""
    step = int(step)
    try:
        with _quiet_orbax_errors():
            manager.save(step, force=True, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params),
                opt_state=ocp.args.StandardSave(opt_state),
                meta=ocp.args.JsonSave(dict(meta, step=step))))
    except (ValueError, OSError) as e:
        _raise_os_error(manager, step, e)
        raise
    pending = getattr(manager, "_bertlab_unrecorded", [])
    manager._bertlab_unrecorded = pending + [step]
    if not _is_async(manager):
        _record_saved_files(manager)


def wait(manager: ocp.CheckpointManager) -> None:
    """Waits for an async save, then records its files (see FILES_RECORD)."""
    try:
        with _quiet_orbax_errors():
            manager.wait_until_finished()
    except (ValueError, OSError) as e:
        steps = getattr(manager, "_bertlab_unrecorded", [])
        _raise_os_error(manager, steps[-1] if steps else None, e)
        raise
    _record_saved_files(manager)


def _is_async(manager: ocp.CheckpointManager) -> bool:
    return bool(getattr(manager, "_options").enable_async_checkpointing)


class _quiet_orbax_errors:
    """orbax logs each failed write thread at ERROR level before raising; the one-line error
    raised here says it all (BERTLAB_DEBUG=1 keeps the logs)."""

    def __enter__(self):
        from bertlab.failures import debug

        self.logger = logging.getLogger("absl")
        self.level = self.logger.level
        if not debug():
            self.logger.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        return False


def _raise_os_error(manager, step: int | None, error: Exception) -> None:
    """An OS error during a save -> OSError naming the file and the step: orbax raises either
    tensorstore's ValueError (with an os_error_code and the file) or a bare OSError (metadata
    writes: no file)."""
    from bertlab.failures import os_error_from_tensorstore

    if isinstance(error, OSError):
        if error.errno is None:
            return
        wrapped = OSError(error.errno, error.strerror or os.strerror(error.errno),
                          error.filename)
    else:
        wrapped = os_error_from_tensorstore(error)
    if wrapped is None:
        return
    if step is not None and jax.process_count() == 1:
        for name in os.listdir(os.fspath(manager.directory)):  # orbax's unfinished tmp dir
            if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                shutil.rmtree(os.path.join(os.fspath(manager.directory), name), ignore_errors=True)
    during = f" while saving checkpoint {step}" if step is not None else ""
    path = wrapped.filename or (os.path.join(os.fspath(manager.directory), str(step))
                                if step is not None else os.fspath(manager.directory))
    raise OSError(wrapped.errno, f"{wrapped.strerror}{during}", path) from None


def _record_saved_files(manager: ocp.CheckpointManager) -> None:
    """Writes FILES_RECORD into each finished step saved since the last call (process 0 only:
    on several hosts the files of every process are on the shared filesystem by now)."""
    steps = getattr(manager, "_bertlab_unrecorded", [])
    manager._bertlab_unrecorded = []
    if jax.process_index() != 0:
        return
    workdir = _workdir_of(manager)
    for step in steps:
        directory = step_dir(workdir, step)
        if os.path.isdir(directory):  # not already dropped by keep_checkpoints
            record = {"step": step, "files": _file_record(directory)}
            path = os.path.join(directory, FILES_RECORD)
            with open(f"{path}.tmp", "w", encoding="utf-8") as f:
                json.dump(record, f, indent=0)
            os.replace(f"{path}.tmp", path)


def _file_record(directory: str) -> dict[str, list]:
    """{relative path: [size, sha256 or None]} of every file of a step directory."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == FILES_RECORD or rel.startswith(f"{FILES_RECORD}."):
                continue
            size = os.path.getsize(path)
            out[rel] = [size, _sha256(path) if size <= CHECKSUM_MAX_BYTES else None]
    return out


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- checking

def verify_files(workdir: str, step: int) -> str | None:
    """Why checkpoint `step` is damaged according to its file record, or None when every file
    has its recorded size and checksum (or the checkpoint has no record: then only reading it
    tells)."""
    directory = step_dir(workdir, step)
    path = os.path.join(directory, FILES_RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{FILES_RECORD} is unreadable ({type(e).__name__}: {e})"
    for rel, (size, digest) in sorted(recorded.items()):
        file = os.path.join(directory, rel)
        try:
            actual = os.path.getsize(file)
            if actual != size:
                return f"{rel} has {actual} bytes, {size} when saved (truncated or overwritten)"
            if digest is not None and _sha256(file) != digest:
                return f"{rel} has changed since it was saved (sha256 differs)"
        except FileNotFoundError:
            return f"{rel} is missing"
        except OSError as e:
            return f"{rel} cannot be read ({e.strerror or e})"
    return None


_UNREADABLE_MARKS = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "FAILED_PRECONDITION",
                     "Error reading", "Error opening", "Encountered error while reading")


def _is_unreadable(error: BaseException) -> bool:
    """Whether a restore failed because the files are damaged (not because the code or the
    config asked for something else: that must not move a good checkpoint aside)."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError,
                              EOFError)):
            return True
        if any(mark in str(error) for mark in _UNREADABLE_MARKS):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _damage(workdir: str, step: int, error: Exception) -> str:
    """The reason to move `step` aside after its restore raised `error`; re-raises `error` when
    the files are intact (their record matched) or the failure is not about reading them: a
    checkpoint that does not fit the model is a bug or a config change, not damage."""
    if not _is_unreadable(error) or os.path.exists(
            os.path.join(step_dir(workdir, step), FILES_RECORD)):
        raise error
    return _reason(error)


_STATUS_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "FAILED_PRECONDITION",
                 "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")


def _reason(error: BaseException) -> str:
    """One line: the tensorstore status message in the cause chain when there is one (orbax
    wraps it in 'Encountered error while reading array index' and a page of spec)."""
    cause, seen = error, 0
    while cause is not None and seen < 8:
        if any(str(cause).startswith(code) for code in _STATUS_CODES):
            error = cause
            break
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}"


def abandon(workdir: str, step: int, reason: str, *, is_main: bool = True) -> str:
    """Moves checkpoint `step` to checkpoints_abandoned/<step>-<time>/ with REASON.txt; returns the
    new path. Nothing is deleted: a damaged checkpoint can still be inspected or repaired."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = os.path.join(os.path.abspath(workdir), ABANDONED_DIR, f"{int(step)}-{stamp}")
    if not is_main:
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    base, suffix = target, 0
    while os.path.exists(target):  # the same step abandoned twice within a second
        suffix += 1
        target = f"{base}.{suffix}"
    os.rename(step_dir(workdir, step), target)
    with open(os.path.join(target, "REASON.txt"), "w", encoding="utf-8") as f:
        f.write(f"checkpoint {step} abandoned {stamp}: {reason}\n")
    return target


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Restored:
    step: int
    params: Any
    opt_state: Any
    meta: dict
    abandoned: list[str]  # the paths checkpoints were moved to, newest first


def restore_latest(manager: ocp.CheckpointManager, *, params_like: Any, opt_state_like: Any,
                   compat: Mapping[str, Any] | None = None,
                   difference: Callable[[Mapping, Mapping], tuple | None] | None = None,
                   is_main: bool = True,
                   log: Callable[[str], None] = _stderr) -> Restored | None:
    """The newest checkpoint that reads, after moving aside each newer one that does not (one
    line each through `log`: step, cause, where it went); None when there is none left.

    `compat` is checked against each candidate's meta before its arrays are read: a mismatch is
    a CheckpointError (the run is the wrong one for this workdir), never a fallback.
    `difference(saved, current)` finds the mismatch (see check_compatible) where a loop knows
    more, e.g. the default of a model knob an old checkpoint's record lacks. Every
    process of a multi-host run calls this and skips the same steps (they read the same files);
    only `is_main` moves directories."""
    workdir = _workdir_of(manager)
    abandoned: list[str] = []
    for step in sorted(manager.all_steps(), reverse=True):
        damaged = verify_files(workdir, step)
        if damaged is None:
            try:
                meta = read_meta(manager, step)
                if compat is not None:
                    check_compatible(meta.get("compat", {}), compat,
                                     where=checkpoint_dir(workdir), difference=difference)
                params, opt_state, meta = restore(manager, step, params_like=params_like,
                                                  opt_state_like=opt_state_like)
                return Restored(step, params, opt_state, meta, abandoned)
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - only damaged files lead to a fallback
                damaged = _damage(workdir, step, e)
        abandoned.append(_fall_back(workdir, step, damaged, is_main=is_main, log=log))
        manager.reload()
    return None


def _fall_back(workdir: str, step: int, reason: str, *, is_main: bool,
               log: Callable[[str], None]) -> str:
    target = abandon(workdir, step, reason, is_main=is_main)
    if is_main:
        log(f"checkpoint {step} in {checkpoint_dir(workdir)} cannot be read ({reason}); moved to "
            f"{target}, trying the previous one")
    return target


def latest_step(manager: ocp.CheckpointManager) -> int | None:
    return manager.latest_step()


def read_meta(manager: ocp.CheckpointManager, step: int) -> dict:
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"])


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding of each array, the target orbax restores into."""
    def leaf(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return jax.tree_util.tree_map(leaf, tree)


def restore(manager: ocp.CheckpointManager, step: int, *, params_like: Any,
            opt_state_like: Any) -> tuple[Any, Any, dict]:
    """(params, opt_state, meta) of `step`, laid out like the given trees (arrays or
    ShapeDtypeStructs, shardings included). No fallback: see restore_latest."""
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_like)),
        opt_state=ocp.args.StandardRestore(_abstract(opt_state_like)),
        meta=ocp.args.JsonRestore()))
    return restored["params"], restored["opt_state"], dict(restored["meta"])


def restore_params(workdir: str, step: int | None = None, *,
                   log: Callable[[str], None] = _stderr) -> tuple[Any, dict]:
    """Parameters (host numpy arrays, as saved) and meta of a workdir's checkpoint, latest by
    default; no optimizer, no model code needed.

    Without `step`, a latest checkpoint that cannot be read is moved aside (see restore_latest)
    and the newest readable one is used; the move is skipped when another process holds the
    workdir's lock (a running pretraining owns its checkpoints), and the step is only skipped. An
    explicit `step` that cannot be read is a CheckpointError naming it."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{workdir}: no {CHECKPOINT_DIR}/ directory; "
                              "is it a pretraining workdir?")
    manager = open_manager(workdir, keep=None, async_save=False, create=False)
    try:
        if step is not None:
            if step not in manager.all_steps():
                raise CheckpointError(f"{directory}: no checkpoint for step {step}; "
                                      f"found {sorted(manager.all_steps())}")
            candidates = [step]
        else:
            candidates = sorted(manager.all_steps(), reverse=True)
        if not candidates:
            raise CheckpointError(f"{directory}: holds no finished checkpoint")
        may_move = not _locked_by_another_process(workdir)
        for candidate in candidates:
            damaged = verify_files(workdir, candidate)
            if damaged is None:
                try:
                    restored = manager.restore(candidate, args=ocp.args.Composite(
                        params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
                    params = jax.tree_util.tree_map(np.asarray, restored["params"])
                    return params, dict(restored["meta"])
                except Exception as e:  # noqa: BLE001 - only damaged files lead to a fallback
                    damaged = _damage(workdir, candidate, e)
            if step is not None:
                raise CheckpointError(f"checkpoint {step} in {directory} cannot be read "
                                      f"({damaged})")
            if may_move:
                _fall_back(workdir, candidate, damaged, is_main=True, log=log)
                manager.reload()
            else:
                log(f"checkpoint {candidate} in {directory} cannot be read ({damaged}); "
                    f"using the previous one")
        raise CheckpointError(f"{directory}: no checkpoint can be read (the unreadable ones "
                              f"were moved to {os.path.join(os.path.abspath(workdir), ABANDONED_DIR)})")
    finally:
        manager.close()


def _locked_by_another_process(workdir: str) -> bool:
    import fcntl

    from bertlab.workdir_lock import lock_path

    try:
        with open(lock_path(workdir), "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], *, where: str,
                     difference: Callable[[Mapping, Mapping], tuple | None] | None = None
                     ) -> None:
    """Refuses to resume when a shape-defining setting differs; names the first differing key
    (found by `difference(saved, current) -> (key, before, now) | None`, by default the first key
    in sorted order whose values differ as JSON sees them: a record read back has lists where
    the run has tuples)."""
    found = (difference or _first_difference)(saved, current)
    if found is not None:
        key, before, now = found
        raise CheckpointError(
            f"{where} holds a checkpoint of an incompatible run: {key} was {before!r}, now "
            f"{now!r}. Use a new --workdir, or set {key} back to {before!r} to resume.")


def _first_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple | None:
    def as_json(value):
        return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist")
                                     else list(v)))

    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if as_json(before) != as_json(now):
            return key, before, now
    return None


# ---------------------------------------------------------------------------------- metrics

def trim_metrics(workdir: str, step: int) -> int:
    """Moves the records of metrics.jsonl with a step after `step` (the step a run resumes
    from) to metrics.abandoned.jsonl, appended; returns how many moved.

    After a resume (and above all after a fallback past a damaged checkpoint) those records
    describe steps the run is about to redo: left in place, a step would have two evaluations
    and loss.png two curves. Lines that are not JSON (cut by a crash) go aside too. The file is
    rewritten through a temporary file and a rename, so a crash leaves the old or the new one."""
    path = os.path.join(os.path.abspath(workdir), METRICS_FILE)
    if not os.path.exists(path):
        return 0
    keep, moved = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                record_step = None
            (keep if record_step is not None and record_step <= step else moved).append(
                line if line.endswith("\n") else line + "\n")
    if not moved:
        return 0
    with open(os.path.join(os.path.dirname(path), ABANDONED_METRICS_FILE), "a",
              encoding="utf-8") as f:
        f.writelines(moved)
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(f"{path}.tmp", path)
    return len(moved)
