"""Both schedules' values at hand-computed points (peak 1e-3, W = 10, T = 100)."""

import numpy as np
import pytest

from bertlab.train import schedules

PEAK, W, T = 1e-3, 10, 100


@pytest.mark.parametrize("step, expected", [
    (0, 0.0),                 # starts at zero
    (5, 0.5e-3),              # mid warm-up: 5/10 of the peak
    (10, 1e-3),               # peak exactly at W
    (55, 0.5e-3),             # mid decay: (100-55)/(100-10) = 0.5
    (100, 0.0),               # zero at T
    (150, 0.0),               # and stays there
])
def test_triangular(step, expected):
    assert float(schedules.triangular(PEAK, W, T)(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("step, expected", [
    (0, 0.0),                 # warm-up replaces the decay: 0/10
    (5, 0.5e-3),              # 5/10 of the peak
    (9, 0.9e-3),              # last warm-up step
    (10, 0.9e-3),             # decay over ALL steps: 1 - 10/100 -- the peak is never reached
    (50, 0.5e-3),             # mid decay: 1 - 50/100
    (100, 0.0),
    (150, 0.0),
])
def test_bert(step, expected):
    assert float(schedules.bert(PEAK, W, T)(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_no_warmup_is_a_plain_linear_decay():
    for make in (schedules.triangular, schedules.bert):
        values = [float(make(1.0, 0, 4)(s)) for s in range(5)]
        np.testing.assert_allclose(values, [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)


def test_traceable_under_jit():
    import jax
    f = jax.jit(schedules.triangular(PEAK, W, T))
    assert float(f(np.int32(55))) == pytest.approx(0.5e-3)


@pytest.mark.parametrize("args, match", [((1e-3, 20, 10), "warmup_steps"), ((1e-3, 0, 0), "num_steps"),
                                         ((-1.0, 0, 10), "peak")])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        schedules.triangular(*args)


def test_constant_warms_up_then_holds_the_peak():
    from bertlab.train import schedules
    schedule = schedules.constant(2e-3, warmup_steps=4, num_steps=10)
    values = [float(schedule(step)) for step in (0, 1, 2, 4, 9, 1000)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 2e-3, 2e-3, 2e-3], rtol=1e-6)
    no_warmup = schedules.constant(5e-5, warmup_steps=0)
    np.testing.assert_allclose([float(no_warmup(s)) for s in (0, 7)], [5e-5, 5e-5], rtol=1e-6)


def test_adam_optimizer_is_constant_rate_and_decays_only_when_asked():
    import jax.numpy as jnp
    import optax
    from bertlab.train import optimizer
    params = {"dense": {"kernel": jnp.ones((2,)), "bias": jnp.ones((2,))}}
    grads = {"dense": {"kernel": jnp.full((2,), 0.5), "bias": jnp.full((2,), -0.5)}}
    common = dict(lr=0.1, warmup_steps=0, num_steps=5, b1=0.9, b2=0.999, eps=1e-8, clip_norm=0.0)
    tx, _ = optimizer.make_optimizer("adam", weight_decay=0.0, **common)
    state = tx.init(params)
    for _ in range(3):  # bias-corrected Adam on a constant gradient: a step of exactly lr * sign
        updates, state = tx.update(grads, state, params)
        np.testing.assert_allclose(updates["dense"]["kernel"], [-0.1, -0.1], rtol=1e-4)
        np.testing.assert_allclose(updates["dense"]["bias"], [0.1, 0.1], rtol=1e-4)
    tx, _ = optimizer.make_optimizer("adam", weight_decay=0.5, **common)
    updates, _ = tx.update(grads, tx.init(params), params)
    # decoupled decay on the kernel only: -(1 + 0.5 * 1) * 0.1; the bias is never decayed
    np.testing.assert_allclose(updates["dense"]["kernel"], [-0.15, -0.15], rtol=1e-4)
    np.testing.assert_allclose(updates["dense"]["bias"], [0.1, 0.1], rtol=1e-4)
    assert isinstance(tx, optax.GradientTransformation)


@pytest.mark.parametrize("shape, progress, expected", [
    ("triangular", 0.0, 0.0),
    ("triangular", 0.1, 0.5e-3),   # mid warm-up: 0.1 / 0.2
    ("triangular", 0.2, 1e-3),     # the peak at the warm-up fraction
    ("triangular", 0.6, 0.5e-3),   # (1 - 0.6) / (1 - 0.2)
    ("triangular", 1.0, 0.0),
    ("triangular", 1.3, 0.0),      # a budget overrun is clipped to the end
    ("bert", 0.1, 0.5e-3),         # warm-up replaces the decay ...
    ("bert", 0.2, 0.8e-3),         # ... over the whole budget: 1 - 0.2
    ("bert", 0.6, 0.4e-3),
    ("constant", 0.1, 0.5e-3),
    ("constant", 0.7, 1e-3),
])
def test_schedules_over_a_time_budget(shape, progress, expected):
    got = float(schedules.of_progress(shape, PEAK, 0.2)(progress))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("progress, expected", [
    (0.0, 0.25e-3),    # cramming's budget-triangle2 starts at a quarter of the peak
    (0.375, 0.625e-3),  # 0.25 + 0.75 x 0.375 / 0.75
    (0.75, 1e-3),      # the peak at 75 % of the budget
    (0.875, 0.5e-3),   # (1 - 0.875) / 0.25
    (1.0, 0.0),
])
def test_cramming_triangle(progress, expected):
    schedule = schedules.of_progress("triangular", PEAK, 0.75, warmup_from=0.25)
    assert float(schedule(progress)) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_budget_schedule_refuses_bad_fractions():
    with pytest.raises(ValueError, match="warmup_fraction=1.0"):
        schedules.of_progress("triangular", PEAK, 1.0)
    with pytest.raises(ValueError, match="unknown shape"):
        schedules.of_progress("cosine", PEAK, 0.1)
