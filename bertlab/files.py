"""Writing result files so that a crash never leaves half of one behind."""

from __future__ import annotations

import json
import os
from typing import Any, Callable


def write_json(path: str, value: Any, *, indent: int = 2,
               default: Callable[[Any], Any] | None = None) -> None:
    """JSON written to a temporary file beside `path`, then renamed over it: readers (a resumed
    run, `bertlab report`) see the old file or the whole new one. The temporary name carries the
    process id, so processes writing the same path never share one."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent, default=default)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    """Text written the same way as write_json: the old file or the whole new one, never half."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def chmod_like_new_file(path: str | os.PathLike) -> None:
    """Gives a file the mode a plain open() would have (0666 less the umask): writers that go
    through a private temporary file (safetensors' save_file) leave it 0600, which other users
    of a shared model directory cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
