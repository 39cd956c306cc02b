"""The MFU denominator is the fastest library's matmul rate, not XLA's alone."""

import importlib.util

import pytest

from bertlab.train import peak_flops


def test_every_installed_library_is_timed_and_the_peak_is_the_fastest(monkeypatch):
    rates = peak_flops.library_matmul_flops(size=64, repeats=2)
    assert "xla" in rates
    assert ("torch" in rates) == (importlib.util.find_spec("torch") is not None)
    assert all(rate > 0 for rate in rates.values())

    monkeypatch.setattr(peak_flops, "library_matmul_flops",
                        lambda *args, **kwargs: {"xla": 1.0e11, "torch": 3.0e11})
    assert peak_flops.measure_matmul_flops(size=64) == 3.0e11


def test_the_rate_is_two_flops_per_multiply_add(monkeypatch):
    """A matmul whose best time is forced to 1 s reports 2 * size^3 FLOP/s."""
    ticks = iter(float(t) for t in range(1000))
    monkeypatch.setattr(peak_flops.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(peak_flops, "_torch_matmul", lambda *args: None)
    rates = peak_flops.library_matmul_flops(size=32, repeats=3)
    assert rates == {"xla": pytest.approx(2.0 * 32 ** 3)}
