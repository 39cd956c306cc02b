"""Creating the training state (flax's TrainState: step, params, opt_state, apply_fn, tx),
directly replicated over the mesh.

The step counter is an int32 array from the start: a Python int would give the first call of the
jitted step a different input type than every later call, and compile it twice.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from bertlab.train.mesh import replicated


def init_inputs(seq_len: int, num_predictions: int | None = None) -> tuple:
    """The dummy inputs a model is initialised with (shapes only matter): token, segment ids and
    attention mask (1, T), plus masked positions (1, P) for the pretraining heads."""
    token_ids = jnp.zeros((1, seq_len), jnp.int32)  # (1, T)
    inputs = (token_ids, token_ids, jnp.ones_like(token_ids))
    if num_predictions is not None:
        inputs += (jnp.zeros((1, num_predictions), jnp.int32),)  # (1, P)
    return inputs


def init_fn(model, *, seq_len: int, num_predictions: int | None = None):
    """key -> the model's freshly initialised parameters (not jitted: callers jit, eval_shape
    or slice it)."""
    inputs = init_inputs(seq_len, num_predictions)
    return lambda key: model.init({"params": key}, *inputs, deterministic=True)["params"]


def init_params(model, rng: jax.Array, *, seq_len: int, num_predictions: int, mesh):
    """The model's freshly initialised parameters, created replicated on the mesh."""
    init = init_fn(model, seq_len=seq_len, num_predictions=num_predictions)
    return jax.jit(init, out_shardings=replicated(mesh))(rng)


def create_train_state(model, tx: optax.GradientTransformation, params, *, step: int = 0,
                       opt_state=None, mesh) -> TrainState:
    """A TrainState around `params` (replicated), with a fresh optimizer state unless given."""
    rep = replicated(mesh)
    if opt_state is None:
        opt_state = jax.jit(tx.init, out_shardings=rep)(params)
    return TrainState(step=jax.device_put(jnp.asarray(step, jnp.int32), rep), apply_fn=model.apply,
                      params=params, tx=tx, opt_state=opt_state)


def abstract_train_state(model, tx: optax.GradientTransformation, *, seq_len: int,
                         num_predictions: int, mesh) -> tuple:
    """(params, opt_state) as ShapeDtypeStructs with shardings: the restore target, with no
    computation and no memory spent on a throw-away initialisation."""
    rep = replicated(mesh)
    params = jax.eval_shape(init_fn(model, seq_len=seq_len, num_predictions=num_predictions),
                            jax.random.PRNGKey(0))
    opt_state = jax.eval_shape(tx.init, params)
    with_sharding = lambda tree: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), tree)
    return with_sharding(params), with_sharding(opt_state)
