"""Failures a user can cause, as one line naming the file and the cause (bertlab.cli prints it).

A full disk, a read-only or unwritable path, a workdir that is a file, undecodable text, a
truncated weights file: each ends a command with `bertlab <command>: error: <one line>` and exit
status 2. The traceback is shown only with BERTLAB_DEBUG=1 (for bug reports).

Writes that can fill a disk go through `naming(path)`, because the OSError of a failed write
often does not carry the file (a plain `f.write` or `json.dump` raises ENOSPC without a
filename) and numpy's array writer reports a short write with no errno at all ("59894 requested
and 51136 written").
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import types
from typing import Iterator

DEBUG_ENV = "BERTLAB_DEBUG"
USAGE_EXIT_CODE = 2

# What to do about each errno a user can cause; the message adds the file and the cause.
_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "over your disk quota; free some space or write elsewhere",
    errno.EROFS: "the filesystem is mounted read-only; write elsewhere",
    errno.EACCES: "write elsewhere or fix the permissions",
    errno.EPERM: "write elsewhere or fix the permissions",
    errno.EEXIST: "exists already",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}
USER_ERRNOS = frozenset(_HINTS)
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
# tensorstore (orbax) wraps OS errors in ValueError: '...Failed writing: "PATH": ...
# No space left on device [os_error_code='28']'
_TENSORSTORE_OS_ERROR = re.compile(r"os_error_code='(\d+)'")
_TENSORSTORE_PATH = re.compile(r'(?:Failed writing|Error writing local file|Error reading local '
                               r'file|Failed to open|Error opening file): "([^"]+)"')


def debug() -> bool:
    """BERTLAB_DEBUG=1: let the traceback through instead of the one line."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def describe_os_error(error: OSError) -> str:
    """'PATH: no space left on device (free some space or write elsewhere)'."""
    code = error.errno
    cause = (error.strerror or (os.strerror(code) if code else str(error))).rstrip(".")
    cause = cause[:1].lower() + cause[1:]
    where = error.filename
    if error.filename2:
        where = f"{error.filename} -> {error.filename2}"
    hint = _HINTS.get(code)
    if code == errno.EEXIST and where and os.path.isfile(str(error.filename)):
        hint = "it is a file, not a directory"
    text = f"{where}: {cause}" if where else cause
    return f"{text} ({hint})" if hint and hint != cause else text


def _short_write_error(error: OSError, path: str) -> OSError:
    """numpy's 'N requested and M written' -> ENOSPC when the disk is (nearly) full, else EIO."""
    match = _SHORT_WRITE.search(str(error))
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path)) or ".").free
    except OSError:
        free = 0
    missing = int(match.group(1)) - int(match.group(2)) if match else 0
    if free <= max(missing, 1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return OSError(errno.EIO, f"short write ({error})", path)


def os_error_from_tensorstore(error: BaseException) -> OSError | None:
    """The OSError inside a tensorstore/orbax ValueError ('RESOURCE_EXHAUSTED: ... No space left
    on device [os_error_code='28']'), with the file it names; None if it wraps none."""
    text = str(error)
    match = _TENSORSTORE_OS_ERROR.search(text)
    if not match:
        return None
    code = int(match.group(1))
    path = _TENSORSTORE_PATH.search(text)
    return OSError(code, os.strerror(code), path.group(1) if path else None)


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """Writes inside the block that fail raise an OSError naming `path` (and ENOSPC for numpy's
    short writes), so the one-line message says which file could not be written."""
    try:
        yield
    except OSError as e:
        if e.errno is None and _SHORT_WRITE.search(str(e)):
            raise _short_write_error(e, path) from e
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), path) from e
        raise


def _file_being_read(traceback: types.TracebackType | None) -> str | None:
    """The name of the innermost open text file in the frames a decoding error passed through:
    the reader that hit the bad byte, whichever module it is in."""
    names = []
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            name = getattr(value, "name", None)
            if isinstance(value, (io.TextIOBase, io.BufferedIOBase, io.RawIOBase)) or \
                    type(value).__module__ in ("gzip", "bz2", "lzma"):
                if isinstance(name, str) and name:
                    names.append(name)
                elif isinstance(getattr(value, "filename", None), str):
                    names.append(value.filename)
        traceback = traceback.tb_next
    return names[-1] if names else None


def describe_decode_error(error: UnicodeDecodeError) -> str:
    where = _file_being_read(error.__traceback__)
    byte = (f"byte 0x{error.object[error.start]:02x}: "
            if isinstance(error.object, (bytes, bytearray)) else "")
    what = f"{where}: " if where else ""
    return (f"{what}not valid {error.encoding.upper()} text ({byte}{error.reason}); convert the "
            f"file to UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def one_line(error: BaseException) -> str | None:
    """The one-line message for a failure a user can cause, or None for anything else (a bug:
    its traceback is the useful report)."""
    from bertlab.workdir_lock import WorkdirError

    if isinstance(error, WorkdirError):
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return describe_decode_error(error)
    if isinstance(error, OSError) and error.errno in USER_ERRNOS:
        return describe_os_error(error)
    wrapped = os_error_from_tensorstore(error) if isinstance(error, ValueError) else None
    if wrapped is not None and wrapped.errno in USER_ERRNOS:
        return describe_os_error(wrapped)
    if type(error).__name__ == "SafetensorError":  # safetensors' Rust error: a damaged file
        return f"a safetensors file cannot be read ({error}); download or convert it again"
    return None
