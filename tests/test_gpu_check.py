"""benchmarks/gpu_check.py at its tiniest size on the CPU: every section runs and reports finite numbers.

No timing is asserted (the machine is shared); the structure, the checks and the arithmetic are."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402

CPU = torch.device("cpu")


def test_a_training_row_has_finite_throughput_and_counted_flops():
    row = gpu_check.measure_training(gpu_check.tiny_sizes(), 2, CPU, bf16=True, flops=True)
    assert row["losses_finite"] and row["samples_per_s"] > 0 and row["steps_per_s"] == pytest.approx(1 / row["seconds_per_step"])
    assert row["flops_per_step"] > 0 and row["peak_memory_gb"] is None  # no GPU memory on a CPU
    rows = [row]
    gpu_check.add_utilisation(rows, {2: row["flops_per_step"]}, peak=1e12)
    assert row["mfu"] == pytest.approx(row["flops_per_step"] / row["seconds_per_step"] / 1e12)


def test_flops_of_one_linear_step_are_forward_plus_backward():
    layer = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(3, 8)
    # forward 2·3·8·4, backward the input and weight gradients (the input needs none here: weight only)
    assert gpu_check.count_flops(lambda: layer(x).sum().backward()) == 2 * 3 * 8 * 4 * 2


def test_the_bf16_peak_is_found_by_device_name_and_can_be_given():
    assert gpu_check.bf16_peak("NVIDIA H200", None) == gpu_check.BF16_PEAK_FLOPS["H200"] == 989e12
    assert gpu_check.bf16_peak("NVIDIA H100 PCIe", None) == 756e12
    assert gpu_check.bf16_peak("x86_64 CPU", None) is None
    assert gpu_check.bf16_peak("anything", 100.0) == 100e12


def test_the_curve_criterion_needs_a_finite_falling_bf16_loss():
    falling = {"bf16": [4.0] * 10 + [1.0] * 10, "fp32": [4.0] * 20}
    assert gpu_check.curve_summary(falling, 0.7)["passed"]
    assert not gpu_check.curve_summary({**falling, "bf16": falling["bf16"][:-1] + [math.nan]}, 0.7)["passed"]
    assert not gpu_check.curve_summary({**falling, "bf16": [4.0] * 20}, 0.7)["passed"]


def test_the_paper_wall_time_is_50_epochs_of_levir_cc_captions_at_the_measured_step_time():
    rows = [{"batch": 4, "precision": "bf16", "variant": gpu_check.BASELINE.name, "seconds_per_step": 0.1,
             "samples_per_s": 40, "losses_finite": True},
            {"batch": 32, "precision": "bf16", "variant": "all four", "seconds_per_step": 0.2,
             "samples_per_s": 160, "losses_finite": True}]
    wall = gpu_check.paper_wall_time(rows)
    assert wall["authors_batch"]["steps"] == 50 * 8519  # ceil(34,075 / 4)
    assert wall["authors_batch"]["hours"] == pytest.approx(50 * 8519 * 0.1 / 3600)
    assert wall["fastest"]["batch"] == 32 and wall["fastest"]["steps"] == 50 * 1065


def test_every_section_but_torchrun_runs_at_the_tiniest_size_and_writes_json_and_markdown(tmp_path):
    sizes = gpu_check.tiny_sizes()
    report = gpu_check.run_checks(sizes, CPU, tmp_path, budget_s=600, max_ratio=10.0, peak_tflops=None,
                                  sections={"training", "curves", "decoding", "search", "variants"})
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["failures"] == [] and saved["skipped"] == []
    # baselines (bf16, fp32) and the variants without torch.compile
    assert [(r["precision"], r["variant"]) for r in saved["training"]] == [
        ("bf16", gpu_check.BASELINE.name), ("fp32", gpu_check.BASELINE.name), ("bf16", gpu_check.BASELINE.name),
        ("bf16", "channels-last"), ("bf16", "fused AdamW"), ("bf16", "cuDNN autotune")]
    assert all(r["losses_finite"] and math.isfinite(r["seconds_per_step"]) for r in saved["training"])
    assert len(saved["curves"]["curves"]["bf16"]) == sizes.curve_steps and saved["curves"]["bf16_finite"]
    assert report["decoding"]["greedy_same_ids_as_authors_loop"] and report["decoding"]["beam_1_same_ids_as_authors_loop"]
    assert report["decoding"]["greedy_identical_caption_share"] == 1.0
    assert [r["decoder"] for r in report["decoding"]["rows"]][0] == "authors' loop"
    assert {(r["dtype"], r["prefilter"]) for r in saved["search"]} >= {("float16", "none"), ("float32", "none")}
    assert all(r["same_top10_as_float_scan"] for r in saved["search"])
    text = (tmp_path / "gpu_check.md").read_text()
    assert text.startswith("## GPU check (issue 14): CPU dry run, not a GPU measurement")
    for heading in ("### Training steps", "### bf16 trains", "### Decoding", "### Gallery search",
                    "### Paper profile wall time"):
        assert heading in text


@pytest.mark.slow
def test_torchrun_trains_checkpoints_resumes_and_the_ddp_probe_runs_on_gloo():
    result = gpu_check.torchrun_check(gpu_check.tiny_sizes(), CPU)
    assert result["passed"], result
    assert result["resumed_step"] == 2 * result["steps_per_epoch"] == 2 * result["checkpoint_step"]
    assert result["ddp_probe"]["output"] == {"backend": "gloo", "world_size": 1, "ok": True}
