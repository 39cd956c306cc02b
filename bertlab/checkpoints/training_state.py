"""Training-state checkpoints with orbax: what a run needs to continue bit for bit.

Layout (one directory per saved step, the newest `keep` kept):

    workdir/checkpoints/<step>/params/      the parameter tree (orbax, sharding-aware)
    workdir/checkpoints/<step>/opt_state/   the optimizer state tree
    workdir/checkpoints/<step>/meta/        JSON: step, base rng, data-iterator state, and the
                                            `compat` record (model shape, vocabulary, optimizer)

params are a separate item so fine-tuning can restore them without knowing the optimizer.
`compat` is what a resumed run must agree with; it is checked before anything is restored or
written, and a mismatch names the key.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from bertlab.checkpoints.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("params", "opt_state", "meta")




def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def open_manager(workdir: str, *, keep: int | None = 3, async_save: bool = True,
                 create: bool = True) -> ocp.CheckpointManager:
    """The manager of workdir/checkpoints. Saves are forced by the caller (no save interval);
    keep=None keeps everything (for readers, which must never delete)."""
    if keep is not None and keep < 1:
        raise CheckpointError(f"train.keep_checkpoints must be >= 1, got {keep}")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def save(manager: ocp.CheckpointManager, step: int, *, params: Any, opt_state: Any,
         meta: Mapping[str, Any]) -> None:
    """Starts saving `step` (asynchronously when the manager is async: call wait() before exit).

    Arrays are copied off the device before this returns, so the caller may donate them."""
    manager.save(int(step), force=True, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        meta=ocp.args.JsonSave(dict(meta, step=int(step)))))


def wait(manager: ocp.CheckpointManager) -> None:
    manager.wait_until_finished()


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
    ShapeDtypeStructs, shardings included)."""
    restored = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(_abstract(params_like)),
        opt_state=ocp.args.StandardRestore(_abstract(opt_state_like)),
        meta=ocp.args.JsonRestore()))
    return restored["params"], restored["opt_state"], dict(restored["meta"])


def restore_params(workdir: str, step: int | None = None) -> tuple[Any, dict]:
    """Parameters (host numpy arrays, as saved) and meta of a workdir's checkpoint, latest by
    default; no optimizer, no model code needed."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{workdir}: no {CHECKPOINT_DIR}/ directory; "
                              "is it a pretraining workdir?")
    manager = open_manager(workdir, keep=None, async_save=False, create=False)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory}: holds no finished checkpoint")
        if step not in manager.all_steps():
            raise CheckpointError(f"{directory}: no checkpoint for step {step}; "
                                  f"found {sorted(manager.all_steps())}")
        restored = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    finally:
        manager.close()
    params = jax.tree_util.tree_map(np.asarray, restored["params"])
    return params, dict(restored["meta"])


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any], *, where: str) -> None:
    """Refuses to resume when a shape-defining setting differs; names the first differing key."""
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if before != now:
            raise CheckpointError(
                f"{where} holds a checkpoint of an incompatible run: {key} was {before!r}, now "
                f"{now!r}. Use a new --workdir, or set {key} back to {before!r} to resume.")
