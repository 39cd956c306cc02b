"""experiments/bench/device_table.py without a device: the vendor peak table, the plan's shape and
budget, and the report built from canned worker results (the workers themselves run in
`device.sh --dry-run`, committed as experiments/bench/device_dryrun_cpu.md)."""

from __future__ import annotations

import argparse
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments", "bench"))

import device_table as dt  # noqa: E402  (imports no jax, no torch)


@pytest.mark.parametrize("name, key, bf16", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989e12),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756e12),
    ("NVIDIA H100 NVL", "H100 NVL", 835.5e12),
    ("NVIDIA H200", "H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", "A100", 312e12),
    ("NVIDIA A100-PCIE-40GB", "A100", 312e12),
])
def test_vendor_dense_peaks_by_device_name(name, key, bf16):
    assert dt.vendor_key(name) == key
    assert dt.vendor_peak(name, "bfloat16") == pytest.approx(bf16)
    # float32 rows run on TF32 tensor cores: half the bf16 dense rate on these parts
    assert dt.vendor_peak(name, "float32") == pytest.approx(bf16 / 2, rel=1e-3)


def test_unknown_devices_have_no_vendor_peak():
    assert dt.vendor_key("cpu") is None and dt.vendor_peak("TPU v5 lite", "bfloat16") is None


def plan(dry: bool, **changes) -> dict:
    args = argparse.Namespace(dry_run=dry, budget_s=None, variants=list(dt.MLM_VARIANTS),
                              tune_variants=list(dt.TUNE_VARIANTS), torch_compile=False,
                              skip_torch=False)
    for name, value in changes.items():
        setattr(args, name, value)
    return dt.make_plan(args)


def test_the_plan_covers_the_issue_table_within_eight_minutes():
    p = plan(False)
    jax_rows = p["groups"][0]["rows"]
    mlm = [r for r in jax_rows if r["kind"] == "mlm"]
    assert {(r["variant"], r["seq"], r["dtype"]) for r in mlm} == {
        (v, s, d) for v, s in dt.MLM_SHAPES for d in dt.DTYPES}
    # the issue's target rows come first, so a short budget still measures them
    assert [(r["variant"], r["seq"], r["dtype"]) for r in mlm[:2]] == [
        ("base", 128, "bfloat16"), ("base", 128, "float32")]
    assert {(r["seq"], r["batch"]) for r in mlm} == {(128, 256), (128, 128), (512, 64)}
    assert {r["predictions"] for r in mlm if r["seq"] == 512} == {80}
    # the peer runs every MLM and fine-tuning row of ours
    torch_rows = p["groups"][2]["rows"]
    assert [r["id"] for r in torch_rows if "id" in r] == [
        r["id"] for r in mlm + p["groups"][1]["rows"]]
    # rows' budgets plus a kill grace of 20 s per worker stay within 8 minutes
    assert sum(g["budget_s"] for g in p["groups"]) + 20 * len(p["groups"]) <= 480


def test_dry_run_plan_is_toy_sized():
    p = plan(True)
    mlm = [r for r in p["groups"][0]["rows"] if r["kind"] == "mlm"]
    assert {r["batch"] for r in mlm} == {4} and {r["seq"] for r in mlm} == {32}
    assert all(r["sizes"] == dt.DRY_SIZES for r in mlm)


def canned_results(p: dict) -> dict:
    """Worker records as the workers write them: a fake H100 where every step is 1 s."""
    found = {("jax", "env", None): {"status": "ok", "device": "NVIDIA H100 80GB HBM3",
                                    "platform": "gpu", "jax": "0.10.2"},
             ("jax", "peak", None): {"status": "ok", "flops": {"bfloat16": 700e12,
                                                               "float32": 350e12}},
             ("torch", "peak", None): {"status": "ok", "flops": {"bfloat16": 750e12,
                                                                 "float32": 300e12}},
             ("torch", "env", None): {"status": "ok", "torch": "2.13.0"}}
    for row in p["groups"][0]["rows"]:
        if row["kind"] == "input":
            found[("jax", "input", row["id"])] = {"status": "ok", "host_tokens_per_s": 1e6,
                                                  "host_masking_tokens_per_s": 5e5}
        if row["kind"] == "mlm":
            tokens = row["batch"] * row["seq"]
            speed = 2.0 if row["dtype"] == "bfloat16" else 1.0
            found[("jax", "mlm", row["id"])] = {"status": "ok", "tokens_per_s": speed * tokens,
                                                "batch": row["batch"], "compile_s": 10.0,
                                                "loop_tokens_per_s": speed * tokens}
            found[("torch", "mlm", row["id"])] = {"status": "ok", "tokens_per_s": tokens / 2}
    return found


def test_report_mfu_ratios_and_targets_from_canned_results():
    p = plan(False)
    markdown, data = dt.build_report(p, canned_results(p), [], "device.sh out")
    assert data["peaks"]["measured"] == {"float32": 350e12, "bfloat16": 750e12}  # best of two
    base16 = next(r for r in data["mlm"] if (r["variant"], r["seq"], r["dtype"]) ==
                  ("base", 128, "bfloat16"))
    # MFU = FLOPs/token x tokens/s / peak, hand-computed from the counter
    expected = base16["flops_per_token"] * 2.0 * 256 * 128 / 750e12
    assert base16["mfu_measured"] == pytest.approx(expected)
    assert base16["mfu_vendor"] == pytest.approx(expected * 750 / 989)
    # 2 x 32,768 tokens/s against a host path of 1e6: the device is the bound
    assert base16["bound"].startswith("device")
    assert "| base bf16 ≥ 2× the PyTorch bf16 peer | 4.00 | yes |" in markdown
    assert "| base bf16 ≥ 1.8× float32 | 2.00 | yes |" in markdown
    # fine-tuning rows were never run: shown as not reached, not dropped
    assert "(not reached)" in markdown and "Rows not reached" in markdown


def test_out_of_memory_halves_the_batch_and_says_so():
    tried = []

    def run(batch):
        tried.append(batch)
        if batch > 64:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")
        return {"tokens_per_s": 1.0}

    result = dt.with_batch_halving(run, {"batch": 256}, cleanup=lambda: tried.append("freed"))
    assert tried == [256, "freed", 128, "freed", 64]
    assert result["batch"] == 64 and "out of memory at batch 256" in result["note"]
    def broken(batch):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):  # anything else is the row's error, not a retry
        dt.with_batch_halving(broken, {"batch": 8})
