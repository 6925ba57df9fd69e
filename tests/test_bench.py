"""Smoke test of experiments/bench.py: tiny repeats, sane numbers."""

import math
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import bench  # noqa: E402


def test_flops_per_sample_counts_forward_and_backward():
    # IgNet Fig. 5: conv 16@5x5 on 58x36x1 -> 54x32x16, FC 27,648 -> 10.
    conv = 2 * 54 * 32 * 16 * 25
    fc = 2 * 54 * 32 * 16 * 10
    assert bench.flops_per_sample(bench.build_model("ignet_fig5")) == 2 * conv + 3 * fc


def test_bench_row_returns_sane_numbers():
    row = bench.bench_row("ignet_fig5", 4, "sgd", repeats=1, target_s=0.01)
    for m in ("autodiff", "manual"):
        assert math.isfinite(row[f"{m}_sps"]) and row[f"{m}_sps"] > 0
        assert row[f"{m}_first_step_s"] > 0
        assert row[f"{m}_gflops"] > 0
    assert row["manual_over_autodiff"] > 0
    assert row["jigcnn_sps"] == max(row["autodiff_sps"], row["manual_sps"])
    assert set(row) >= {"net", "batch", "optimizer", "jigcnn_sps"}


def test_vs_torch_without_torch_says_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    out = bench.main(["--quick", "--vs-torch", "--nets", "lenet5", "--batches", "4", "--optimizers", "sgd",
                      "--methods", "autodiff", "--no-cache", "--json", str(tmp_path / "b.json")])
    assert "PyTorch is not installed" in capsys.readouterr().err
    assert (tmp_path / "b.json").exists() and out["rows"][0]["autodiff_sps"] > 0


def test_startup_measures_to_the_first_step_not_to_the_exit(monkeypatch):
    """The child reports the wall-clock time of its first step; its exit (here 0.5 s later) is not counted."""
    code = ("import time, sys\n"
            "print('STARTUP', 0.25, 0.125, time.time())\n"
            "sys.stdout.flush(); time.sleep(0.5)\n")
    monkeypatch.setattr(bench, "_STARTUP_CODE", code)
    s = bench.startup()
    assert (s["setup_s"], s["first_step_s"]) == (0.25, 0.125)
    assert 0 < s["process_to_first_step_s"] < s["process_wall_s"] - 0.4


def test_startup_repeats_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--startup-repeats", "0"])
    assert "--startup-repeats must be at least 1" in capsys.readouterr().err
