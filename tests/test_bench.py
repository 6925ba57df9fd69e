"""experiments/bench.py: the pure parts (FLOPs, the round-robin order, the statistics, the ratio), the PyTorch
nets' parameter counts, and a --quick run with its workers (PyTorch's skipped when torch is missing)."""

import json
import math
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import bench  # noqa: E402

HAVE_TORCH = bench.torch_available()


def test_step_flops_counts_forward_and_backward():
    # IgNet Fig. 5: conv 16@5x5 on 58x36x1 -> 54x32x16, FC 27,648 -> 10. The conv is the first
    # layer with parameters: forward + weight gradient only (the data needs no gradient).
    conv = 2 * 54 * 32 * 16 * 25
    fc = 2 * 54 * 32 * 16 * 10
    assert bench.step_flops(bench.build_model("ignet_fig5")) == {"forward": conv + fc, "train": 2 * conv + 3 * fc}
    assert bench.flops_per_sample(bench.build_model("ignet_fig5")) == 2 * conv + 3 * fc


def test_step_flops_of_the_thesis_fashion_cnn_from_its_shapes():
    # 3x3 same convs: 28x28 1->32, 32->32, pool, 14x14 32->64, 64->64, pool, FC 7*7*64 -> 64 -> 10
    convs = [2 * 28 * 28 * 9 * 1 * 32, 2 * 28 * 28 * 9 * 32 * 32, 2 * 14 * 14 * 9 * 32 * 64, 2 * 14 * 14 * 9 * 64 * 64]
    fcs = [2 * 7 * 7 * 64 * 64, 2 * 64 * 10]
    fl = bench.step_flops(bench.build_model("thesis_fashion_cnn"))
    assert fl["forward"] == sum(convs) + sum(fcs)
    assert fl["train"] == 3 * fl["forward"] - convs[0]


def test_interleaved_schedule_is_round_robin():
    assert bench.interleaved_schedule(["a", "b", "c"], 2) == [(0, "a"), (0, "b"), (0, "c"),
                                                              (1, "a"), (1, "b"), (1, "c")]
    with pytest.raises(ValueError, match="repeats must be a positive int, got 0"):
        bench.interleaved_schedule(["a"], 0)


def test_summarise_reports_median_and_spread_of_samples_per_second():
    s = bench.summarise(10, [0.1, 0.5, 0.2, 0.25, 1.0])  # 100, 20, 50, 40, 10 samples/s
    assert s["median_sps"] == 40 and (s["min_sps"], s["max_sps"]) == (10, 100)
    assert (s["q1_sps"], s["q3_sps"]) == (20, 50)
    assert s["median_step_s"] == 0.25 and s["samples_sps"] == [100, 20, 50, 40, 10]  # in repeat order


def test_compare_takes_the_best_of_each_side():
    r = bench.compare({"autodiff": 100.0, "manual": 150.0, "torch-nchw": 120.0, "torch-channels_last": 60.0})
    assert (r["jigcnn_best"], r["torch_best"]) == ("manual", "torch-nchw")
    assert r["ratio"] == pytest.approx(150 / 120) and r["manual_over_autodiff"] == pytest.approx(100 / 150)
    # the best PyTorch contender, whichever layout it is; failed contenders (None) left out
    r = bench.compare({"autodiff": 100.0, "manual": None, "torch-nchw": 50.0, "torch-channels_last": 80.0})
    assert (r["jigcnn_best"], r["torch_best"], r["ratio"]) == ("autodiff", "torch-channels_last", 1.25)
    assert r["manual_over_autodiff"] is None
    # plain- variants are reference points, not jigcnn's best, unless nothing else ran
    r = bench.compare({"autodiff": 100.0, "plain-autodiff": 300.0, "torch-nchw": 50.0})
    assert r["jigcnn_best"] == "autodiff" and r["ratio"] == 2.0
    assert bench.compare({"plain-manual": 30.0, "torch-nchw": 60.0})["ratio"] == 0.5
    r = bench.compare({"autodiff": 100.0, "torch-nchw": None})
    assert r["torch_best"] is None and r["ratio"] is None


def test_rows_default_to_each_nets_own_batches_and_optimizers():
    assert bench.rows_to_run(["thesis_fashion_cnn", "vgg_small"]) == [
        ("thesis_fashion_cnn", 64, "adam-onecycle"), ("vgg_small", 128, "nesterov")]
    assert bench.rows_to_run(["lenet5"], [8], ["sgd"]) == [("lenet5", 8, "sgd")]
    assert len(bench.rows_to_run(list(bench.NETS))) == 4 + 4 + 4
    assert bench.rows_to_run(["resnet20"]) == [("resnet20", 128, "he-sgd")]


def test_resnet20_row_counts_the_flops_inside_its_blocks():
    # conv1 3->16 at 32x32 (first: no input gradient); stage 1: 6 convs 16->16 at 32x32; stage 2: 16->32 (s2)
    # then 5 x 32->32 at 16x16; stage 3 likewise 32->64 at 8x8; FC 64 -> 10. Shortcuts (option A) cost nothing.
    mac = lambda hw, ci, co: 2 * hw * hw * 9 * ci * co  # noqa: E731
    convs = ([mac(32, 3, 16)] + [mac(32, 16, 16)] * 6 + [mac(16, 16, 32)] + [mac(16, 32, 32)] * 5
             + [mac(8, 32, 64)] + [mac(8, 64, 64)] * 5)
    fc = 2 * 64 * 10
    fl = bench.step_flops(bench.build_model("resnet20"))
    assert fl["forward"] == sum(convs) + fc  # ~40.6M multiply-adds, He et al.'s ResNet-20
    assert fl["train"] == 3 * fl["forward"] - convs[0]
    assert "he-sgd" in bench.OPTIMIZERS and bench.NETS["resnet20"].input_shape == (32, 32, 3)


@pytest.mark.parametrize("argv, message", [
    (["--nets", "resnet99"], "--nets: unknown value 'resnet99'"),
    (["--batches", "32,0"], "--batches: '0' is not a positive integer"),
    (["--batches", "x"], "--batches: 'x' is not a positive integer"),
    (["--contenders", "tf"], "--contenders: unknown value 'tf'"),
    (["--optimizers", "lbfgs"], "--optimizers: unknown value 'lbfgs'"),
    (["--methods", "torch-nchw"], "--methods: unknown value 'torch-nchw'"),
    (["--methods", "autodiff", "--contenders", "manual"], "give one of them"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--repeat-seconds", "0"], "--repeat-seconds must be positive, got 0.0"),
    (["--startup-repeats", "0"], "--startup-repeats must be at least 1, got 0"),
    (["--startup", "--startup-nets", "lenet5,vgg"], "--startup-nets: unknown value 'vgg'"),
])
def test_bad_arguments_name_the_argument_and_value(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (not a jigcnn dependency)")
@pytest.mark.parametrize("net", list(bench.NETS))
def test_torch_nets_have_jigcnns_parameter_counts(net):
    import torch

    model = bench.build_model(net)
    tnet = bench.torch_model(net)
    bench.check_param_counts(net, tnet, model.count_params())
    trainable, non = model.count_params()
    with pytest.raises(AssertionError, match="trainable parameters"):
        bench.check_param_counts(net, tnet, (trainable + 1, non))
    h, w, c = bench.NETS[net].input_shape
    assert tnet(torch.zeros(2, c, h, w)).shape == (2, bench.CLASSES)
    assert any(isinstance(m, torch.nn.Dropout) for m in tnet.modules()) == (net.startswith("thesis_"))


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed (not a jigcnn dependency)")
def test_torch_resnet20_uses_option_a_shortcuts_as_jigcnn():
    import jax.numpy as jnp
    import numpy as np
    import torch

    from jigcnn.layers.graph import IdentityShortcut

    tnet = bench.torch_model("resnet20")
    blocks = [m for m in tnet.modules() if hasattr(m, "shortcut")]
    assert len(blocks) == 9 and sum(not isinstance(b.shortcut, torch.nn.Identity) for b in blocks) == 2
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)  # NHWC
    want, _ = IdentityShortcut(32, 2).apply({}, {}, jnp.asarray(x))
    got = blocks[3].shortcut(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, np.asarray(want))  # subsampled, then 16 zero channels appended
    opt, sched = bench.torch_optimizer("he-sgd", tnet)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0] and sched.milestones


def test_quick_run_times_every_contender_in_its_own_worker(tmp_path, capsys):
    path = tmp_path / "b.json"
    out = bench.main(["--quick", "--vs-torch", "--nets", "ignet_fig5", "--batches", "4", "--optimizers", "sgd",
                      "--no-cache", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))  # the file is the returned result
    printed = capsys.readouterr()
    (row,) = out["rows"]
    want = ["autodiff", "manual"] + (["torch-nchw", "torch-channels_last"] if HAVE_TORCH else [])
    assert list(row["contenders"]) == want and out["contenders"] == want
    assert ("PyTorch is not installed" in printed.err) == (not HAVE_TORCH)
    for name, c in row["contenders"].items():
        assert c["error"] is None, (name, c["error"])
        assert len(c["step_s"]) == 3 and c["min_sps"] <= c["median_sps"] <= c["max_sps"]
        assert 0 < c["first_step_s"] < c["first_step_from_spawn_s"]  # the process start counts too
        assert c["gflops"] == pytest.approx(row["train_flops_per_sample"] * c["median_sps"] / 1e9)
        assert 0 < c["peak_fraction"] == pytest.approx(c["gflops"] / out["gemm_peak"]["best_gflops"])
    assert set(out["gemm_peak"]["gflops"]) == ({"xla", "numpy", "torch"} if HAVE_TORCH else {"xla", "numpy"})
    assert len(row["load_before"]) == 3 and len(row["load_after"]) == 3
    best = bench.compare({k: v["median_sps"] for k, v in row["contenders"].items()})
    assert {k: row[k] for k in best} == best
    assert (row["ratio"] is not None) == HAVE_TORCH
    if HAVE_TORCH:
        assert row["contenders"]["torch-nchw"]["info"]["threads"] == bench.cores()
        assert "PyTorch's best" in printed.out


def test_a_failing_worker_is_reported_and_the_row_goes_on(monkeypatch):
    real = bench.worker_command

    def command(spec):
        if spec.get("contender") == "manual":
            return [sys.executable, "-c", "import sys; sys.stderr.write('boom at start\\n'); sys.exit(3)"]
        return real(spec)

    monkeypatch.setattr(bench, "worker_command", command)
    row = bench.run_row("ignet_fig5", 4, "sgd", ["autodiff", "manual"], repeats=2, target_s=0.01, cache=False)
    assert "exited (code 3)" in row["contenders"]["manual"]["error"]
    assert "boom at start" in row["contenders"]["manual"]["error"]
    assert len(row["contenders"]["autodiff"]["step_s"]) == 2
    assert row["jigcnn_best"] == "autodiff" and row["manual_over_autodiff"] is None
    assert "manual" in bench.format_row(row) and "error: worker exited" in bench.format_row(row)


def test_a_worker_reports_its_own_errors():
    w = bench.Worker({"kind": "train", "contender": "autodiff", "net": "no_such_net", "batch": 4,
                      "optimizer": "sgd", "seed": 0, "allocator": "default", "cache": False, "threads": 1})
    try:
        with pytest.raises(bench.WorkerError, match="unknown net 'no_such_net'"):
            w.recv(120)
    finally:
        w.close()


def test_vs_torch_without_torch_says_so(monkeypatch, capsys):
    monkeypatch.setattr(bench, "torch_available", lambda: False)
    out = bench.main(["--quick", "--vs-torch", "--nets", "lenet5", "--batches", "4", "--optimizers", "sgd",
                      "--contenders", "autodiff", "--no-cache", "--no-peak"])
    assert "PyTorch is not installed" in capsys.readouterr().err
    assert list(out["rows"][0]["contenders"]) == ["autodiff"] and out["gemm_peak"] is None
    assert out["rows"][0]["contenders"]["autodiff"]["median_sps"] > 0
    assert out["rows"][0]["contenders"]["autodiff"]["peak_fraction"] is None


def test_gemm_peak_runs_each_backend_in_its_own_process():
    peak = bench.gemm_peak(64, 1, ["numpy", "nosuch"], timeout=120)
    assert peak["gflops"]["numpy"] > 0 and "unknown GEMM backend 'nosuch'" in peak["errors"]["nosuch"]
    assert peak["best_backend"] == "numpy" and peak["best_gflops"] == peak["gflops"]["numpy"]


def test_startup_measures_to_the_first_step_not_to_the_exit(monkeypatch):
    """The child reports the wall-clock time of its first step; its exit (here 0.5 s later) is not counted."""
    code = ("import time, sys\n"
            "print('STARTUP', 0.25, 0.125, time.time())\n"
            "sys.stdout.flush(); time.sleep(0.5)\n")
    monkeypatch.setattr(bench, "_STARTUP_CODE", code)
    s = bench.startup()
    assert (s["setup_s"], s["first_step_s"]) == (0.25, 0.125)
    assert 0 < s["process_to_first_step_s"] < s["process_wall_s"] - 0.4
    assert not math.isnan(s["process_wall_s"])


@pytest.mark.parametrize("net", list(bench.NETS))
def test_startup_code_builds_each_nets_first_bench_row(net, monkeypatch):
    """The start-up child for ``net`` is valid Python that trains the net's first bench row (batch, optimizer)."""
    seen = {}

    def fake_run(cmd, **kw):
        seen["code"] = cmd[-1]
        compile(cmd[-1], "<startup>", "exec")
        return subprocess.CompletedProcess(cmd, 0, stdout="STARTUP 0.5 2.0 %f\n" % time.time(), stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    s = bench.startup(None, net)
    spec = bench.NETS[net]
    assert (s["net"], s["batch"], s["optimizer"]) == (net, spec.batches[0], spec.optimizers[0])
    assert f"build_model({net!r})" in seen["code"] and f"jax_optimizer({spec.optimizers[0]!r})" in seen["code"]
    assert f"_data({net!r}, {spec.batches[0]!r})" in seen["code"] and "compile_cache.enable" in seen["code"]
    with pytest.raises(ValueError, match="unknown net 'vgg'"):
        bench.startup(None, "vgg")


def test_he_sgd_is_the_cifar10_experiments_resnet20_recipe():
    """The bench's he-sgd and experiments.cifar10's resnet20 recipe give the same updates (they are built apart)."""
    import jax
    import jax.numpy as jnp

    from experiments import bench, cifar10

    params = {"conv1": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)}}
    grads = jax.tree.map(lambda p: 0.5 * p, params)
    a, b = bench.jax_optimizer("he-sgd"), cifar10.recipe_optimizer(cifar10.RECIPES["resnet20"], 0.1,
                                                                   bench.ONECYCLE_STEPS)
    sa, sb = a.init(params), b.init(params)
    for _ in range(3):
        ua, sa = a.update(grads, sa, params)
        ub, sb = b.update(grads, sb, params)
        for u, v in zip(jax.tree.leaves(ua), jax.tree.leaves(ub)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    # the kernel decays, the bias does not
    assert float(ua["conv1"]["kernel"][0, 0, 0, 0]) != float(ua["conv1"]["bias"][0])


# --- --profile ---

def test_trace_ops_times_synchronous_and_asynchronous_operations():
    """A synchronous op's events' durations; an asynchronous one's start-to-end span; other names ignored; per step."""
    instr = {"fusion.1": {}, "convolution.2": {}}
    events = [
        {"ph": "X", "name": "fusion.1", "ts": 0.0, "dur": 300.0},
        {"ph": "X", "name": "fusion.1", "ts": 5000.0, "dur": 500.0},
        {"ph": "X", "name": "convolution.2", "ts": 1000.0, "dur": 10.0},         # launched at 1,000 us
        {"ph": "X", "name": "end: convolution.2", "ts": 2900.0, "dur": 100.0},    # done at 3,000 us
        {"ph": "X", "name": "convolution.2", "ts": 6000.0, "dur": 10.0},
        {"ph": "X", "name": "end: convolution.2", "ts": 6900.0, "dur": 100.0},    # 1,000 us
        {"ph": "X", "name": "$api.py:1 block_until_ready", "ts": 0.0, "dur": 9000.0},
        {"ph": "X", "name": "ThunkExecutor::Execute", "ts": 0.0, "dur": 8000.0},
        {"ph": "i", "name": "fusion.1", "ts": 0.0},                               # not a complete event
        {"ph": "M", "name": "process_name"},
    ]
    got = bench.trace_ops(events, instr, steps=2)
    assert got == {"fusion.1": {"ms": pytest.approx(0.4), "calls": 1.0},
                   "convolution.2": {"ms": pytest.approx(1.5), "calls": 1.0}}
    # an unmatched end event count: the start events' own durations
    got = bench.trace_ops(events[:5], instr, steps=1)
    assert got["convolution.2"]["ms"] == pytest.approx(0.02)


def test_hlo_instructions_of_a_compiled_gradient():
    """Opcodes, classes, shapes (tuples whole) and reverse-mode marks read from a real compiled program."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def loss(w, x):
        z = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.tanh(z) @ jnp.ones((8, 3), x.dtype))

    x, w = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))
    text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(w, x).compile().as_text()
    got = bench.hlo_instructions(text)
    convs = [v for v in got.values() if v["class"] == "convolution"]
    # the forward conv, and the input gradient from its transpose (XLA keeps no metadata on the weight gradient)
    assert any(v["reverse"] for v in convs) and any(v["jax_op"] == "conv_general_dilated" and not v["reverse"]
                                                for v in convs)
    assert all(v["shape"].startswith(("f32[", "(")) for v in convs)
    line = ('  %t = (f32[5,5,1,6]{3,2,1,0}, f32[6]{0}) custom-call(%a, %b), custom_call_target="k", '
            'metadata={op_name="jit(step)/transpose(jvp())/ffi_call"}')
    assert bench.hlo_instructions(line) == {"t": {"opcode": "custom-call", "class": "native", "jax_op": "ffi_call",
                                                  "reverse": True, "shape": "(f32[5,5,1,6]{3,2,1,0}, f32[6]{0})"}}
    cond = bench.hlo_instructions("%c = (f32[2]{0}) conditional(%p, %a, %b), branch_computations={%x, %y}")
    assert cond["c"]["class"] == "control" and cond["c"]["jax_op"] == "" and not cond["c"]["reverse"]


def test_profile_of_a_real_step_in_its_own_worker(tmp_path, capsys):
    path = tmp_path / "p.json"
    out = bench.main(["--profile", "--nets", "lenet5", "--batches", "8", "--optimizers", "sgd", "--contenders",
                      "autodiff", "--profile-steps", "2", "--profile-top", "5", "--no-cache", "--json", str(path)])
    assert json.loads(path.read_text()) == json.loads(json.dumps(out))
    (p,) = out["profiles"]
    assert p["error"] is None, p["error"]
    assert p["steps"] == 2 and p["step_s"] > 0 and p["first_step_s"] > 0
    assert p["ops"] and [r["ms"] for r in p["ops"]] == sorted((r["ms"] for r in p["ops"]), reverse=True)
    assert {r["class"] for r in p["ops"]} <= set(bench.OP_CLASSES) | {"control"}
    assert any(r["reverse"] for r in p["ops"])  # autodiff: its backward comes from transposes
    assert list(p["ms_by_class"]) == list(bench.OP_CLASSES)
    assert sum(p["ms_by_class"].values()) == pytest.approx(
        sum(r["ms"] for r in p["ops"] if r["class"] != "control"))
    printed = capsys.readouterr().out
    assert "profile: lenet5, batch 8, sgd, autodiff" in printed and "by class:" in printed
    assert printed.count("\n  ") == 3 + 5  # step, by class, column heads; the top 5 operations


def test_profile_refuses_pytorch_contenders():
    for argv in (["--profile", "--vs-torch"], ["--profile", "--contenders", "autodiff,torch-nchw"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2
