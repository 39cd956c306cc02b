"""config.json and final_metrics.json across restarts: nothing finished is lost by a failed resume.

A finished run's workdir holds the config it ran with (config.json) and its results
(final_metrics.json, which is also a sweep stage's `done` file). A later start in the same
workdir (more steps, a resume that then diverges or hits a full disk) must not destroy them
before it has something to replace them with. So:

- `record_start` (after the config was validated, the workdir locked and the checkpoint found
  compatible): with a finished run in the workdir, the new config goes to config.pending.json
  and config.json / final_metrics.json stay as they are; without one, config.json is written
  at once (a crashed run's config must be there to resume it), the one it replaces kept as
  config.previous.json.
- `record_finish` (when the run reached its last step): the pending config becomes config.json,
  the one it replaces becomes config.previous.json, and final_metrics.json is written whole
  (the previous results kept as final_metrics.previous.json).

Only the main process of a multi-host run writes (`is_main`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

from bertlab.files import write_json

CONFIG_FILE = "config.json"
PENDING_CONFIG_FILE = "config.pending.json"
PREVIOUS_CONFIG_FILE = "config.previous.json"
FINAL_METRICS_FILE = "final_metrics.json"
PREVIOUS_FINAL_METRICS_FILE = "final_metrics.previous.json"


def read_json(path: str) -> Any:
    """The JSON value of `path`, or None when it is missing or unreadable (cut by a crash)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


_read = read_json


def is_finished(workdir: str, final_name: str = FINAL_METRICS_FILE) -> bool:
    return os.path.exists(os.path.join(workdir, final_name))


def record_start(workdir: str, config: Mapping[str, Any], *, is_main: bool = True,
                 default=None, final_name: str = FINAL_METRICS_FILE) -> str:
    """Writes this start's config without replacing a finished run's; returns the path written.
    `default` serialises what JSON cannot (as json.dump's); `final_name` is the file whose
    presence means finished (fine-tuning: summary.json)."""
    if not is_main:
        return ""
    current = os.path.join(workdir, CONFIG_FILE)
    if is_finished(workdir, final_name):
        path = os.path.join(workdir, PENDING_CONFIG_FILE)
        write_json(path, dict(config), default=default)
        return path
    _keep_previous(current, json.loads(json.dumps(dict(config), default=default)))
    write_json(current, dict(config), default=default)
    return current


def record_finish(workdir: str, final: Mapping[str, Any], *, is_main: bool = True,
                  default=None, final_name: str = FINAL_METRICS_FILE) -> None:
    """The run finished: its config becomes config.json and its results final_metrics.json (or
    `final_name`), the previous ones kept beside them."""
    if not is_main:
        return
    pending = os.path.join(workdir, PENDING_CONFIG_FILE)
    current = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(pending):
        _keep_previous(current, _read(pending))
        os.replace(pending, current)
    final_path = os.path.join(workdir, final_name)
    if os.path.exists(final_path):  # copied, not moved: the workdir is never without results
        shutil.copyfile(final_path, os.path.join(workdir, _previous_name(final_name)))
    write_json(final_path, dict(final), default=default)


def set_aside_final(workdir: str, *, final_name: str = FINAL_METRICS_FILE) -> None:
    """final_metrics.json -> final_metrics.previous.json: the results of a deliberate stop
    (train.stop_after) that this start trains past; until it finishes, the workdir is
    unfinished (a sweep reruns the stage to resume it), and nothing is deleted."""
    path = os.path.join(workdir, final_name)
    if os.path.exists(path):
        os.replace(path, os.path.join(workdir, _previous_name(final_name)))


def _previous_name(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}.previous{ext}"


def _keep_previous(current: str, new_config: Any) -> None:
    """config.json -> config.previous.json when the new config differs from it."""
    if os.path.exists(current) and _read(current) != new_config:
        os.replace(current, os.path.join(os.path.dirname(current), PREVIOUS_CONFIG_FILE))
