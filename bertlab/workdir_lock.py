"""One process per workdir: an exclusive lock held for as long as a run writes into a directory.

Two runs in one workdir overwrite each other's checkpoints and write every metric twice, so a
run takes `workdir/.bertlab.lock` first. The lock is `fcntl.flock` on that file: the kernel
releases it when the holder exits, however it exits (SIGKILL, a crash, a lost node), so there is
never a lock to clean up by hand. The file's content (PID, host, start time, command line) is
only for the message a refused process prints, and for the notice when a run takes over the
record of a holder that is gone.

The file is never deleted: a process that removed it on exit could let two later processes lock
two different files of the same name. After release it is left empty.

Multi-host runs: only process 0 locks (`is_main`); the other processes write nothing of their
own in the workdir. The lock is re-entrant within one process, so a loop that locks its workdir
may call helpers that lock it again.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Callable, Iterator

LOCK_FILE = ".bertlab.lock"

_held: dict[str, list] = {}  # realpath of the directory -> [open lock file, depth]


class WorkdirError(OSError):
    """A directory a run cannot use: it is locked by another process, or it is not a directory.
    str() is one line that names the directory, the holder and what to do."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class WorkdirLocked(WorkdirError):
    """Another live process holds the directory's lock."""


def lock_path(directory: str) -> str:
    return os.path.join(directory, LOCK_FILE)


def ensure_directory(directory: str, *, what: str = "--workdir") -> str:
    """Creates `directory` (and its parents) unless it exists; a path that is a regular file is a
    one-line WorkdirError instead of FileExistsError from deep inside a run."""
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise WorkdirError(f"{what} {directory}: is a file, not a directory; pass a directory "
                           f"(it is created if missing)")
    parent = directory
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise WorkdirError(f"{what} {directory}: {parent} is a file, not a directory")
    os.makedirs(directory, exist_ok=True)
    return directory


def read_holder(directory: str) -> dict | None:
    """The record in the lock file ({pid, host, started, command}), or None when empty/unreadable."""
    try:
        with open(lock_path(directory), encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def describe(holder: dict | None) -> str:
    if not holder:
        return "another process (no record in the lock file)"
    command = holder.get("command") or "?"
    if len(command) > 120:
        command = command[:117] + "..."
    return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} (started "
            f"{holder.get('started', '?')}: {command})")


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}


def _refusal(directory: str, holder: dict | None) -> WorkdirLocked:
    pid = holder.get("pid") if holder else None
    kill = f"stop it (kill {pid})" if pid and holder.get("host") == socket.gethostname() \
        else "stop it"
    return WorkdirLocked(
        f"{directory} is in use by {describe(holder)}; wait for it to finish, {kill}, or use "
        f"another --workdir")


def _write_record(f) -> None:
    f.seek(0)
    f.truncate()
    f.write(json.dumps(_record()) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _take_over_notice(directory: str, previous: dict | None) -> str | None:
    """What to tell the user when the lock was free but the file still names a holder."""
    if not previous:
        return None
    if previous.get("host") == socket.gethostname() and isinstance(previous.get("pid"), int):
        state = "no longer running" if not pid_alive(previous["pid"]) else \
            "running but no longer holding the lock (its PID was reused)"
    else:
        state = "no longer holding the lock (it crashed or was stopped)"
    return (f"note: {directory}: taking over the lock left by {describe(previous)}, which is "
            f"{state}")


def acquire(directory: str, *, notice: Callable[[str], None] | None = None):
    """Locks `directory` (created if missing) for this process; returns the open lock file.

    Raises WorkdirLocked when another process holds it. Prefer the context manager `locked`."""
    directory = ensure_directory(directory)
    key = os.path.realpath(directory)
    if key in _held:
        _held[key][1] += 1
        return _held[key][0]
    while True:
        f = open(lock_path(directory), "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _refusal(directory, read_holder(directory)) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                _check_record_without_flock(directory)  # a filesystem without flock (some NFS)
            if not _same_file(f, lock_path(directory)):
                f.close()  # the file was removed (remove_if_unused) while we opened it: again
                continue
            message = _take_over_notice(directory, read_holder(directory))
            _write_record(f)
        except BaseException:
            f.close()
            raise
        break
    if message:
        (notice or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
    _held[key] = [f, 1]
    return f


def _check_record_without_flock(directory: str) -> None:
    """Where flock is unavailable, the recorded PID is all there is: a live one on this host,
    or any one on another host (which cannot be probed), refuses."""
    holder = read_holder(directory)
    if not holder:
        return
    if holder.get("host") != socket.gethostname():
        raise WorkdirLocked(
            f"{directory}: locks are not supported on this filesystem and {lock_path(directory)} "
            f"names {describe(holder)}; if that run is gone, delete the file and rerun")
    if isinstance(holder.get("pid"), int) and pid_alive(holder["pid"]) and \
            holder["pid"] != os.getpid():
        raise _refusal(directory, holder)


def _same_file(f, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def remove_if_unused(directory: str) -> None:
    """Removes `directory` when it holds nothing but an unlocked lock file (a run that created it
    and failed before writing anything); safe against a process locking it at the same time."""
    path = lock_path(directory)
    try:
        if sorted(os.listdir(directory)) != [LOCK_FILE]:
            return
        with open(path, "a+", encoding="utf-8") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: leave it alone
            os.remove(path)
        os.rmdir(directory)
    except OSError:
        pass


def release(directory: str) -> None:
    key = os.path.realpath(os.path.abspath(os.path.expanduser(directory)))
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    f = entry[0]
    try:
        f.seek(0)
        f.truncate()  # empty: the next holder finds no stale record
        f.flush()
    except OSError:
        pass  # a full or read-only disk must not hide the run's own outcome
    finally:
        f.close()  # closing releases the flock


@contextlib.contextmanager
def locked(directory: str, *, is_main: bool = True,
           notice: Callable[[str], None] | None = None) -> Iterator[str]:
    """`with locked(workdir, is_main=jax.process_index() == 0): ...` holds the workdir's lock for
    the block. Yields the absolute directory. Processes other than the main one lock nothing."""
    if not is_main:
        yield os.path.abspath(os.path.expanduser(directory))
        return
    acquire(directory, notice=notice)
    try:
        yield os.path.abspath(os.path.expanduser(directory))
    finally:
        release(directory)
