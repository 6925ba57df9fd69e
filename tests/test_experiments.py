"""Every experiment's ``--quick`` run, in-process, on tiny data: results.json with the agreed fields.

Each experiment is called as an importable function (``experiments.<name>.run(quick=True, out=...)``);
``main`` is exercised once through argparse. The drawings experiments use a 24-image synthetic
stand-in (generated into a temporary cache); the benchmarks use small slices of the shared data sets
(skipped when ../shared/data is absent).
"""

import dataclasses
import importlib
import importlib.util
import json
import sys
import time
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the longer quick runs (20-35 s each on 2 cores) run with -m slow, to keep the default run short
_slow = pytest.mark.slow
DRAWINGS = ["ignet_drawings", "init_diagnostics", "activations", pytest.param("depth_freezeconnect", marks=_slow),
            pytest.param("keras_baseline", marks=_slow)]
BENCHMARKS = ["lenet_mnist", pytest.param("fashion_mnist", marks=_slow), pytest.param("cifar10", marks=_slow)]
REQUIRED = ("experiment", "command", "config", "data", "protocol", "published", "metrics", "wall_time_s",
            "environment", "headline")


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    """A private cache for the tiny stand-in (n=24), shared by the drawings experiments."""
    import os

    old = os.environ.get("JIGCNN_CACHE")
    os.environ["JIGCNN_CACHE"] = str(tmp_path_factory.mktemp("jigcnn_cache"))
    yield
    if old is None:
        os.environ.pop("JIGCNN_CACHE", None)
    else:
        os.environ["JIGCNN_CACHE"] = old


def _check(out: pathlib.Path, name: str, res: dict):
    data = json.loads((out / "results.json").read_text())
    for key in REQUIRED:
        assert key in data, f"{name}: results.json lacks {key!r}"
    assert data["experiment"] == name
    assert data["config"]["quick"] is True
    env = data["environment"]
    assert env["jax_version"] and env["jigcnn_version"]
    for p in data.get("plots", []):
        assert (out / p).is_file(), f"{name}: plot {p} missing"
    assert res["experiment"] == name
    return data


@pytest.mark.parametrize("name", DRAWINGS)
def test_drawings_experiment_quick(name, tmp_path, synth_cache):
    mod = importlib.import_module(f"experiments.{name}")
    out = tmp_path / "results" / name
    if name == "init_diagnostics":  # one experiment goes through argparse (main)
        assert mod.main(["--quick", "--out", str(out)]) == 0
        res = json.loads((out / "results.json").read_text())
    else:
        res = mod.run(out=out, quick=True, verbose=False)
    data = _check(out, name, res)
    assert "stand-in" in data["data"] and data["real_data"] is False
    assert isinstance(mod.summary(data), str)
    if name == "ignet_drawings":  # both protocols, a baseline beside every figure, leaks only in `paper`
        for row in data["rows"]:
            for proto in ("paper", "grouped"):
                assert row[proto]["summary"]["baseline_test"] is not None
            assert all(f["sources_in_train_and_test"] == 0 for f in row["grouped"]["folds"])
            assert sum(f["sources_in_train_and_test"] for f in row["paper"]["folds"]) > 0
        assert "baseline" in mod.summary(data)
    # the report collects whatever is there and lists the rest as not run
    from experiments import report

    text = report.run(results_dir=tmp_path / "results", out=tmp_path / "results.md")
    assert name in text and "not run" in text


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_experiment_quick(name, tmp_path, shared_data_dir):
    mod = importlib.import_module(f"experiments.{name}")
    res = mod.run(out=tmp_path, data_dir=str(shared_data_dir), quick=True, verbose=False)
    data = _check(tmp_path, name, res)
    assert data["real_data"] is True
    assert isinstance(mod.summary(data), str)


def test_flip_tta_accuracy_averages_each_image_with_its_mirror():
    import jax
    import numpy as np

    from experiments.common import flip_tta_accuracy
    from jigcnn import Dense, Flatten, Sequential

    model = Sequential([Flatten(), Dense(3)], input_shape=(2, 3, 1))
    params, state = model.init(jax.random.key(0))
    x = np.random.default_rng(0).normal(size=(7, 2, 3, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0])

    def probs(v):
        z = np.asarray(model.apply(params, state, v)[0], np.float64)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    want = np.mean(np.argmax(probs(x) + probs(x[:, :, ::-1]), -1) == y)
    assert flip_tta_accuracy(model, params, state, x, y, batch=3) == pytest.approx(want)
    sym = (x + x[:, :, ::-1]) / 2  # mirror-symmetric images: the same as the single-view accuracy
    assert flip_tta_accuracy(model, params, state, sym, y) == pytest.approx(np.mean(np.argmax(probs(sym), -1) == y))


def test_report_lists_replicates_under_their_experiment(tmp_path):
    from experiments import report

    main = {"experiment": "no_such_experiment", "headline": {"ours": "main 1%"}, "command": "cmd-main"}
    rep = {"experiment": "no_such_experiment", "headline": {"ours": "seed one 2%"}, "command": "cmd-rep",
           "environment": {"load_average_1_5_15": [1.5, 1, 1]}}
    (tmp_path / "exp" / "replicates" / "seed1").mkdir(parents=True)
    (tmp_path / "exp" / "results.json").write_text(json.dumps(main))
    (tmp_path / "exp" / "replicates" / "seed1" / "results.json").write_text(json.dumps(rep))
    (tmp_path / "exp" / "replicates" / "broken").mkdir()
    (tmp_path / "exp" / "replicates" / "broken" / "results.json").write_text("{not json")
    text = report.run(results_dir=tmp_path, out=tmp_path / "results.md")
    section = text[text.index("## exp"):]
    assert "* seed1: seed one 2%; command `cmd-rep`" in section and "load 1.5" in section
    assert "broken" not in section
    # a replicate is not an experiment of its own
    assert "## seed1" not in text


def test_report_names_each_runs_own_command_when_runs_were_kept_from_earlier_commands(tmp_path):
    from experiments import report

    kept = {"experiment": "no_such_experiment", "command": "cmd-last",
            "runs": {"a": {"command": "cmd-first"}, "b": {"command": "cmd-last"}}}
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "results.json").write_text(json.dumps(kept))
    same = dict(kept, runs={"a": {"command": "cmd-last"}})
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "results.json").write_text(json.dumps(same))
    text = report.run(results_dir=tmp_path, out=tmp_path / "results.md")
    kept_section = text[text.index("## kept"):text.index("## same")]
    assert "* a: `cmd-first`" in kept_section and "* b: `cmd-last`" in kept_section
    # one command made every run: nothing to add
    assert "own command" not in text[text.index("## same"):]


def test_run_program_retains_freed_memory_and_exits_with_mains_status():
    from experiments import common
    from jigcnn import allocator

    if not allocator.available():
        pytest.skip("jigcnn.allocator needs glibc (Linux)")
    try:
        with pytest.raises(SystemExit) as exit_info:
            common.run_program(lambda: 3)
        assert exit_info.value.code == 3
        assert allocator.retaining()
        assert common.environment()["malloc_retains_freed_memory"] is True
    finally:
        allocator.restore_defaults()
    assert common.environment()["malloc_retains_freed_memory"] is False


# ---------------------------------------------------------------- output folders, early argument checks, user errors


def test_default_out_keeps_quick_runs_out_of_results():
    from experiments import common

    assert common.default_out("ignet_drawings") == common.RESULTS_ROOT / "ignet_drawings"
    assert common.default_out("ignet_drawings", quick=True) == common.RUNS_ROOT / "ignet_drawings-quick"
    assert common.RUNS_ROOT != common.RESULTS_ROOT and common.RUNS_ROOT.name == "runs"
    assert common.default_out("x", quick=True, out="elsewhere") == pathlib.Path("elsewhere")
    assert common.default_out("x", quick=False, out="/tmp/y") == pathlib.Path("/tmp/y")
    assert common.base_parser("x", "d").parse_args(["--quick"]).out is None  # resolved by run, not by argparse
    # runs/ is git-ignored, so a quick run leaves the working tree clean
    assert "runs/" in (ROOT / ".gitignore").read_text().split()


def _snapshot(folder: pathlib.Path) -> dict:
    import hashlib

    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_quick_run_without_out_leaves_the_committed_results_unchanged(tmp_path, monkeypatch, synth_cache):
    from experiments import common, init_diagnostics

    committed = common.RESULTS_ROOT / "init_diagnostics"
    before = _snapshot(committed)
    monkeypatch.setattr(common, "RUNS_ROOT", tmp_path / "runs")  # where runs/ would be, kept out of the repo
    assert init_diagnostics.main(["--quick"]) == 0
    assert _snapshot(committed) == before
    data = json.loads((tmp_path / "runs" / "init_diagnostics-quick" / "results.json").read_text())
    assert data["config"]["quick"] is True and data["experiment"] == "init_diagnostics"


def test_typo_in_protocols_fails_within_seconds_naming_it_and_the_choices(tmp_path, capsys):
    import time

    from experiments import common, ignet_drawings

    t0 = time.perf_counter()
    with pytest.raises(ValueError) as e:
        ignet_drawings.main(["--protocols", "paper,groupd", "--out", str(tmp_path / "o")])
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "--protocols" in msg and "'groupd'" in msg and "paper, grouped" in msg
    assert not (tmp_path / "o" / "results.json").exists()
    # as a program: one line, status 2, no traceback
    with pytest.raises(SystemExit) as exit_info:
        common.run_program(lambda: ignet_drawings.main(["--protocols", "paper,groupd", "--out", str(tmp_path / "o")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --protocols") and "groupd" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("name, argv, needle", [
    ("ignet_drawings", ["--targets", "age,whodrew"], "--targets: unknown 'whodrew'"),
    ("ignet_drawings", ["--target", "age"], "--target 'age'"),
    ("ignet_drawings", ["--manifest", "/no/such.csv", "--target", "age"], "--manifest '/no/such.csv'"),
    ("ignet_drawings", ["--data-dir", "/no/such/folder"], "--data-dir '/no/such/folder'"),
    ("ignet_drawings", ["--passes", "0"], "--passes: must be >= 1, got 0"),
    ("keras_baseline", ["--protocols", "grouped,paperr"], "'paperr'; valid choices: paper, grouped"),
    ("keras_baseline", ["--folds", "6"], "--folds: must be between 1 and 5, got 6"),
    ("depth_freezeconnect", ["--depths", "1,x"], "--depths: 'x' is not an integer"),
    ("depth_freezeconnect", ["--rate", "1.0"], "--rate: must be a finite number >= 0, < 1, got 1.0"),
    ("activations", ["--lr", "-0.1"], "--lr: must be a finite number > 0, got -0.1"),
    ("init_diagnostics", ["--filters", "0"], "--filters: must be >= 1, got 0"),
    ("lenet_mnist", ["--epochs", "0"], "--epochs: must be >= 1, got 0"),
    ("fashion_mnist", ["--crop-pad", "-1"], "--crop-pad: must be >= 0, got -1"),
    ("cifar10", ["--nets", "vgg"], "--nets: unknown 'vgg'; valid choices: vgg_small, thesis_cifar_cnn"),
    ("cifar10", ["--label-smoothing", "1"], "--label-smoothing"),
    ("cifar10", ["--minutes", "0"], "--minutes: must be a finite number > 0, got 0.0"),
    ("cifar10", ["--weight-decay", "-1"], "--weight-decay: must be a finite number >= 0, got -1.0"),
    ("cifar10", ["--widths", "32,x,64"], "--widths must be comma-separated integers (one per stage), got '32,x,64'"),
    ("cifar10", ["--widths", "32,64"], "--widths must be three positive integers (one per stage), got (32, 64)"),
    ("cifar10", ["--widths", "32,0,64"], "--widths must be three positive integers"),
    ("cifar10", ["--widths", "32,64,128"], "--widths applies to vgg_small, resnet20, not to thesis_cifar_cnn"),
])
def test_bad_arguments_fail_before_any_data_or_training(name, argv, needle, tmp_path):
    mod = importlib.import_module(f"experiments.{name}")
    from experiments import common

    with pytest.raises(common.USER_ERRORS) as e:  # UserError (a ValueError), FileNotFoundError, NotADirectoryError
        mod.main([*argv, "--out", str(tmp_path / "o")])
    assert needle in str(e.value)
    assert not (tmp_path / "o" / "results.json").exists()


def test_missing_folders_are_user_errors_not_value_errors(tmp_path):
    from experiments import common

    with pytest.raises(FileNotFoundError, match="--data-dir '/no/such'"):
        common.check_dir("--data-dir", "/no/such")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        common.check_dir("--data-dir", tmp_path / "f")
    assert common.check_dir("--data-dir", tmp_path) == str(tmp_path) and common.check_dir("--data-dir", None) is None


def test_unwritable_out_fails_before_training(tmp_path):
    import time

    from experiments import activations, common

    (tmp_path / "a_file").write_text("not a folder")
    bad = tmp_path / "a_file" / "out"
    t0 = time.perf_counter()
    with pytest.raises(OSError) as e:  # OutputPathError: a UserError (ValueError) and an OSError
        activations.main(["--quick", "--out", str(bad)])
    assert time.perf_counter() - t0 < 5
    assert isinstance(e.value, ValueError) and f"--out {str(bad)!r}" in str(e.value)
    ok = common.prepare_output("x", tmp_path / "new" / "deep")
    assert ok.is_dir() and list(ok.iterdir()) == []  # the probe file is gone


def test_run_program_keeps_the_traceback_for_bugs(capsys):
    from experiments import common
    from jigcnn import allocator

    try:
        with pytest.raises(ZeroDivisionError):
            common.run_program(lambda: 1 // 0)
        with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: status 2 with a usage line
            common.run_program(lambda: common.base_parser("x", "d").parse_args(["--seed", "one"]))
        assert exit_info.value.code == 2
        assert "invalid int value: 'one'" in capsys.readouterr().err
    finally:
        if allocator.available():
            allocator.restore_defaults()


def test_check_helpers_name_the_argument_value_and_rule():
    from experiments import common

    assert common.check_int("--k", 3, 1, 5) == 3
    with pytest.raises(ValueError, match=r"--k: expected an integer, got 2\.5"):
        common.check_int("--k", 2.5)
    with pytest.raises(ValueError, match="--k: expected an integer, got True"):
        common.check_int("--k", True)
    assert common.check_float("--lr", "0.5", gt=0) == 0.5
    with pytest.raises(ValueError, match="--lr: must be a finite number > 0, got nan"):
        common.check_float("--lr", float("nan"), gt=0)
    assert common.check_choices("--p", "b, a", ("a", "b")) == ("b", "a")
    with pytest.raises(ValueError, match="--p: give at least one of a, b"):
        common.check_choices("--p", "", ("a", "b"))
    with pytest.raises(ValueError, match="names a value twice"):
        common.check_choices("--p", "a,a", ("a", "b"))


def test_no_experiment_imports_another_experiment():
    import ast

    for path in sorted((ROOT / "experiments").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + ([f"{node.module}.{a.name}" for a in node.names]
                                        if node.module == "experiments" else [])
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                if m.startswith("experiments."):
                    assert m == "experiments.common", f"{path.name} imports {m}: share it through common or jigcnn"


def test_diagnostic_from_json_reads_new_and_old_results():
    import math

    from experiments import common
    from jigcnn.diagnostics import Diagnostic, LayerRow

    d = Diagnostic((LayerRow("conv1", "Conv2D", 1.0, 0.5, 0.25, 0.125, 2.0),
                    LayerRow("head", "Activation", 3.0, 0.1, math.nan, 0.2, math.nan)), 7.5)
    back = common.diagnostic_from_json(json.loads(json.dumps(common._jsonable(d.to_dict()))))
    assert back.rows[0] == d.rows[0] and back.loss == 7.5 and math.isnan(back["head"].weight_mav)
    old = [{"layer": "conv1", "input": 1.0, "act_deriv": 0.5, "saturated": 0.0, "weights": 0.25, "dL_dz": 0.125,
            "dL_dw": 2.0}]
    assert common.diagnostic_from_json(old)["conv1"].weight_grad_mav == 2.0


def test_run_program_prints_user_errors_in_one_line_unless_asked_for_the_traceback(capsys, monkeypatch):
    from experiments import common
    from jigcnn import allocator

    def bad():
        raise common.UserError("--x: 'y' is wrong")

    try:
        monkeypatch.delenv("JIGCNN_TRACEBACK", raising=False)
        with pytest.raises(SystemExit) as exit_info:
            common.run_program(bad)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == "error: --x: 'y' is wrong\n"
        with pytest.raises(SystemExit) as exit_info:
            common.run_program(lambda: (_ for _ in ()).throw(FileNotFoundError("--data-dir '/n': no such folder")))
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: --data-dir")
        monkeypatch.setenv("JIGCNN_TRACEBACK", "1")
        with pytest.raises(common.UserError):
            common.run_program(bad)
    finally:
        if allocator.available():
            allocator.restore_defaults()


def test_cifar10_quick_resnet20(tmp_path, shared_data_dir, monkeypatch):
    """`python -m experiments.cifar10 --net resnet20 --quick --minutes 5` trains ResNet-20 one epoch on the PNG
    subset with He et al.'s recipe, under a wall-clock budget (the probe stubbed: its compilation is not tested here)."""
    from experiments import cifar10

    probed = []

    def probe(model, tx, loss, x, y, batch_size, grad_method, seed=0, steps=3):
        probed.append((batch_size, grad_method, loss))
        return {"first_step_s": 1.0, "step_s": 0.5, "steps": steps}

    monkeypatch.setattr(cifar10, "probe", probe)
    res = cifar10.run(out=tmp_path / "o", data_dir=shared_data_dir, quick=True, nets="resnet20", minutes=5,
                      verbose=False)
    data = _check(tmp_path / "o", "cifar10", res)
    assert list(data["runs"]) == ["resnet20"]
    run = data["runs"]["resnet20"]
    assert run["params"] == [269_722, 1_376]
    assert probed == [(64, "autodiff", "softmax_cross_entropy")]  # no label smoothing in He et al.'s recipe
    assert (run["schedule"], run["weight_decay"], run["label_smoothing"]) == ("step", 1e-4, 0.0)
    assert run["recipe"].startswith("batch 64, SGD momentum 0.9, step (/10 at 50% and 75% of the steps) peak lr 0.1")
    assert run["batch_size"] == 64 and data["config"]["batch_sizes"] == {"resnet20": 64}  # --quick: batch 64
    b = run["budget"]
    assert b["minutes"] == 5 and b["epochs_scheduled"] == run["epochs"] == 1  # --quick: one epoch
    assert b["epochs_planned"] >= 1 and run["stopped_reason"] == "completed 1 epochs"
    assert set(run["goals"]) == {"85%", "90%"} and "not reached" in run["goals"]["90%"]
    assert "0.9" in run["time_to"] and "time to 90%: not reached" in cifar10.summary(data)


def test_cifar10_recipes_set_each_nets_batch_and_epochs(monkeypatch):
    """vgg_small trains 10 epochs at batch 64 (issue 19's 85% within 10 epochs); the others 14 at batch 128;
    the command line leaves both to the recipe unless given."""
    from experiments import cifar10

    got = {net: (r.batch_size, r.epochs) for net, r in cifar10.RECIPES.items()}
    assert got == {"vgg_small": (64, 10), "thesis_cifar_cnn": (128, 14), "resnet20": (128, 14)}
    assert cifar10.describe(cifar10.RECIPES["vgg_small"], 0.1).startswith("widths 32-96-192, batch 64, SGD Nesterov momentum 0.9")
    seen = {}
    monkeypatch.setattr(cifar10, "run", lambda **kw: seen.update(kw))
    assert cifar10.main(["--nets", "vgg_small"]) == 0
    assert seen["batch_size"] is None and seen["epochs"] is None
    cifar10.main(["--nets", "vgg_small", "--batch-size", "32", "--epochs", "3"])
    assert seen["batch_size"] == 32 and seen["epochs"] == 3


@pytest.mark.parametrize("experiment, net, argv", [
    ("cifar10", "thesis_cifar_cnn", ["--nets", "thesis_cifar_cnn"]), ("fashion_mnist", "thesis_fashion_cnn", [])])
@pytest.mark.parametrize("flag, expected", [([], True), (["--no-fast-variance"], False)])
def test_thesis_nets_get_the_one_pass_variance(experiment, net, argv, flag, expected, tmp_path, shared_data_dir,
                                                monkeypatch):
    """The experiments build the thesis nets with the one-pass batch-norm variance unless --no-fast-variance."""
    import importlib

    from jigcnn import zoo

    class Built(Exception):
        pass

    def build(**kw):
        raise Built(kw)

    monkeypatch.setattr(zoo, net, build)
    module = importlib.import_module(f"experiments.{experiment}")
    with pytest.raises(Built) as e:
        module.main(argv + flag + ["--quick", "--out", str(tmp_path / "o")])
    assert e.value.args[0]["fast_variance"] is expected


@pytest.mark.parametrize("net, widths", [("vgg_small", (32, 96, 192)), ("resnet20", (16, 48, 96))])
def test_cifar10_widths_reach_the_net_and_the_record(net, widths, tmp_path, shared_data_dir, monkeypatch):
    """``--widths`` builds the zoo net with those widths (and the one-pass variance) and names them in the recipe."""
    from experiments import cifar10
    from jigcnn import zoo

    class Built(Exception):
        pass

    def build(**kw):
        raise Built(kw)

    monkeypatch.setattr(zoo, net, build)
    with pytest.raises(Built) as e:
        cifar10.main(["--nets", net, "--widths", ",".join(map(str, widths)), "--quick", "--out", str(tmp_path / "o")])
    assert e.value.args[0] == {"head_activation": None, "fast_variance": True, "widths": widths}
    recipe = dataclasses.replace(cifar10.RECIPES[net], widths=widths)
    assert cifar10.describe(recipe, 0.1).startswith(f"widths {'-'.join(map(str, widths))}, batch ")
    assert not cifar10.describe(cifar10.RECIPES["thesis_cifar_cnn"], 0.1).startswith("widths")


def test_cifar10_quick_resnet20_records_a_torch_reference_when_asked(tmp_path, shared_data_dir, monkeypatch):
    """``torch_reference=True`` measures the yardstick before and after training and keeps it with each net's run."""
    from experiments import cifar10, common

    calls = []

    def fake_reference():
        calls.append(len(calls))
        return {**common.TORCH_REFERENCE, "samples_per_s": 500.0 + len(calls), "min_sps": 480.0, "max_sps": 520.0,
                "step_s": 0.256, "repeats": 3, "load_before": [0.5, 0.4, 0.3], "load_after": [0.6, 0.4, 0.3],
                "measured_utc": "2026-12-03T17:00:00Z"}

    monkeypatch.setattr(common, "torch_reference", fake_reference)
    monkeypatch.setattr(cifar10, "probe", lambda *a, **k: {"first_step_s": 1.0, "step_s": 0.5, "steps": 3})
    res = cifar10.run(out=tmp_path / "o", data_dir=shared_data_dir, quick=True, nets="resnet20", minutes=5,
                      torch_reference=True, verbose=False)
    assert calls == [0, 1]
    refs = res["runs"]["resnet20"]["torch_reference"]
    assert refs == res["torch_reference"] and refs["start"]["samples_per_s"] == 501.0
    assert refs["end"]["samples_per_s"] == 502.0
    assert "PyTorch eager vgg_small training step" in cifar10.summary(res) and "start 501 samples/s" in cifar10.summary(res)
    calls.clear()
    res = cifar10.run(out=tmp_path / "q", data_dir=shared_data_dir, quick=True, nets="resnet20", minutes=5,
                      verbose=False)                                   # --quick: not measured by default
    assert calls == [] and res["torch_reference"] is None


def test_torch_reference_without_torch_is_a_note_not_an_error(monkeypatch):
    from experiments import common

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    monkeypatch.setattr(common, "_run_bench", lambda *a, **k: pytest.fail("no bench without PyTorch"))
    r = common.torch_reference()
    assert r["net"] == "vgg_small" and "PyTorch is not installed" in r["error"]
    assert "start: not measured (PyTorch is not installed" in common.torch_reference_line({"start": r, "end": None})
    assert common.torch_reference_line(None) is None


def test_torch_reference_reads_the_bench_json_and_its_failure(monkeypatch):
    from experiments import common

    seen = {}
    steps = [0.25, 0.2, 0.32]
    per = sorted(128 / s for s in steps)

    def fake_bench(argv, *, timeout):
        seen["argv"], seen["timeout"] = argv, timeout
        c = {"error": None, "step_s": steps, "median_sps": per[1], "min_sps": per[0], "max_sps": per[2],
             "median_step_s": 0.25}
        return {"rows": [{"net": "vgg_small", "batch": 128, "optimizer": "nesterov", "load_before": [1.0, 1, 1],
                          "load_after": [1.5, 1, 1], "contenders": {"torch-channels_last": c}}]}, None

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "torch" else real(name, *a))
    monkeypatch.setattr(common, "_run_bench", fake_bench)
    r = common.torch_reference(repeats=3, seconds=1.0, timeout=100)
    a = seen["argv"]
    opts = {a[i]: a[i + 1] for i in range(len(a) - 1) if a[i].startswith("--") and not a[i + 1].startswith("--")}
    assert (opts["--nets"], opts["--batches"], opts["--optimizers"], opts["--contenders"]) == (
        "vgg_small", "128", "nesterov", "torch-channels_last")
    assert (opts["--repeats"], float(opts["--repeat-seconds"])) == ("3", 1.0) and "--no-peak" in a
    assert seen["timeout"] > 100
    assert r["samples_per_s"] == 512.0 and r["min_sps"] == 400.0 and r["max_sps"] == 640.0 and r["step_s"] == 0.25
    assert r["load_before"] == [1.0, 1, 1] and r["load_after"] == [1.5, 1, 1]
    monkeypatch.setattr(common, "_run_bench", lambda argv, **k: ({"rows": [{
        "net": "vgg_small", "batch": 128, "optimizer": "nesterov", "load_before": [1.0] * 3, "load_after": [1.0] * 3,
        "contenders": {"torch-channels_last": {"error": "worker exited with status 1", "step_s": []}}}]}, None))
    assert common.torch_reference()["error"] == "worker exited with status 1"
    monkeypatch.setattr(common, "_run_bench", lambda argv, **k: (None, "experiments.bench exited with status 2: x"))
    assert common.torch_reference()["error"] == "experiments.bench exited with status 2: x"
    monkeypatch.setattr(common, "_run_bench", lambda argv, **k: ({"rows": []}, None))
    assert "no row" in common.torch_reference()["error"]


def test_run_bench_reports_a_bad_command_line_as_an_error():
    """The child process is real: a bench argument it refuses comes back as the reason, not an exception."""
    from experiments import common

    result, err = common._run_bench(["--nets", "no_such_net", "--no-peak"], timeout=120)
    assert result is None and "exited with status 2" in err and "no_such_net" in err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (not a dependency)")
def test_torch_reference_measures_pytorch_in_its_own_process():
    from experiments import common

    r = common.torch_reference(repeats=2, seconds=0.2)
    assert r.get("error") is None and r["samples_per_s"] > 0 and r["min_sps"] <= r["samples_per_s"] <= r["max_sps"]


def test_cifar10_recipes_are_each_nets_own():
    from experiments import cifar10

    he = cifar10.RECIPES["resnet20"]
    assert (he.schedule, he.nesterov, he.weight_decay, he.label_smoothing) == ("step", False, 1e-4, 0.0)
    vgg = cifar10.RECIPES["vgg_small"]
    assert (vgg.schedule, vgg.nesterov, vgg.weight_decay, vgg.label_smoothing) == ("onecycle", True, 5e-4, 0.1)
    assert "Nesterov momentum 0.9, one-cycle cosine peak lr 0.1" in cifar10.describe(vgg, 0.1)


def test_cifar10_step_schedule_divides_by_ten_at_half_and_three_quarters():
    import numpy as np

    from experiments import cifar10

    s = cifar10.step_schedule(0.1, 400)
    got = [float(s(k)) for k in (0, 199, 200, 299, 300, 399)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    tiny = cifar10.step_schedule(0.1, 1)  # both boundaries round to step 1: one factor of 100 there
    np.testing.assert_allclose([float(tiny(0)), float(tiny(1))], [0.1, 0.001], rtol=1e-6)


def test_cifar10_step_recipe_decays_kernels_only():
    import jax.numpy as jnp

    from experiments import cifar10

    tx = cifar10.recipe_optimizer(cifar10.RECIPES["resnet20"], 0.1, 100)
    params = {"conv": {"kernel": jnp.ones(3)}, "bn": {"gamma": jnp.ones(3)}}
    zero = {"conv": {"kernel": jnp.zeros(3)}, "bn": {"gamma": jnp.zeros(3)}}
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(updates["conv"]["kernel"][0]) == pytest.approx(-0.1 * 1e-4)  # -lr * wd * w, first step
    assert float(updates["bn"]["gamma"][0]) == 0.0


def test_cifar10_probe_times_warm_steps_and_takes_their_median(monkeypatch):
    """The probe compiles, runs `warmup` untimed steps, then times `steps` one by one; step_s is their median."""
    import numpy as np
    import optax

    from experiments import cifar10
    from jigcnn import Dense, Flatten, Sequential
    import jigcnn.train

    calls = []
    real = jigcnn.train.make_train_step

    def counting(*a, **k):
        step = real(*a, **k)

        def counted(*args):
            calls.append(1)
            if len(calls) in (2, 4):  # a warm-up step and the first timed one run slow
                time.sleep(0.3)
            return step(*args)
        return counted

    monkeypatch.setattr(jigcnn.train, "make_train_step", counting)
    model = Sequential([Flatten(), Dense(3)], input_shape=(4, 4, 1))
    x, y = np.zeros((16, 4, 4, 1), np.float32), np.zeros(16, np.int32)
    pr = cifar10.probe(model, optax.sgd(0.1), "softmax_cross_entropy", x, y, 8, "autodiff", steps=4, warmup=2)
    assert len(calls) == 1 + 2 + 4
    assert pr["steps"] == 4 and pr["warmup"] == 2 and len(pr["step_times_s"]) == 4
    assert pr["step_s"] == pytest.approx(float(np.median(pr["step_times_s"])), abs=1e-4)
    assert max(pr["step_times_s"]) >= 0.3 and pr["step_s"] < 0.1  # the slow timed step is not the median
    assert pr["first_step_s"] > 0
    with pytest.raises(ValueError, match="steps"):
        cifar10.probe(model, optax.sgd(0.1), "softmax_cross_entropy", x, y, 8, "autodiff", steps=0)


def test_cifar10_wall_clock_budget_plans_and_stops_after_the_last_epoch_that_fits():
    from experiments import cifar10

    # 10 min left after a 30 s probe; 100 steps of 1 s + 20 s evaluation per epoch; the first 40 s longer
    assert cifar10.plan_epochs(600, 30, 1.0, 100, 20, 40) == 4
    assert cifar10.plan_epochs(60, 30, 1.0, 100, 20, 40) == 1  # at least one
    # the same with real epochs 1.2x the estimate: 144 s each, 530 s left -> 3
    assert cifar10.plan_epochs(600, 30, 1.0, 100, 20, 40, overhead=1.2) == 3
    for bad in (0.9, float("nan"), "1.1"):
        with pytest.raises(ValueError, match="overhead must be a number >= 1"):
            cifar10.plan_epochs(600, 30, 1.0, 100, 20, 40, overhead=bad)
    with pytest.raises(ValueError, match="epoch estimate must be > 0"):
        cifar10.plan_epochs(60, 0, 0.0, 100, 0, 0)
    now = [0.0]
    rule = cifar10.WallClockBudget(deadline=100.0, clock=lambda: now[0])
    st = rule.init()
    now[0] = 40.0
    st, d = rule.update(st, 1, 40.0, "time")  # 60 s left >= 40 s: go on
    assert not d.stop and st == {"left_s": 60.0}
    now[0] = 75.0
    st, d = rule.update(st, 2, 35.0, "time")  # 25 s left < 35 s: stop
    assert d.stop and "wall-clock budget: 0.4 min left after epoch 2" in d.reason and not d.improved


def test_cifar10_goals_say_not_reached_with_the_best_and_the_time():
    from experiments import cifar10

    info = {"time_to": {"0.85": {"epoch": 3, "wall_time_s": 600.0}, "0.9": None}, "best_test_accuracy": 0.8812,
            "train_wall_time_s": 1200.0}
    assert cifar10.goal_report(info) == {"85%": "10.0 min (epoch 3)",
                                         "90%": "not reached (best 88.12% in 20.0 min of training)"}


# ---------------------------------------------------------------- ignet_drawings --manifest: declared column types


def _tiny_manifest(folder: pathlib.Path, *, images: bool = True, n: int = 16) -> pathlib.Path:
    """A manifest of ``n`` 8x8 grey PNGs: ``score`` integers 1-4, ``code`` integer codes, ``note`` one 'abc'."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["file,score,code,note,group"]
    for i in range(n):
        if images:
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(folder / f"d{i}.png")
        lines.append(f"d{i}.png,{1 + i % 4},{10 + i % 2},{'abc' if i == 3 else i},g{i // 2}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def test_ignet_drawings_manifest_column_types_pass_through_to_the_loader(tmp_path):
    """--numeric / --categorical reach load_manifest (the 'abc' cell is an error unless its column is categorical)
    and decide the task: a declared numeric target is regressed, a declared categorical one classified."""
    from experiments import ignet_drawings as ig
    from jigcnn.data import DataError

    csv_path = _tiny_manifest(tmp_path / "m")
    with pytest.raises(DataError, match=r"line 5 .*'abc'"):  # undeclared: 'note' is mostly numbers
        ig.load_data(manifest=csv_path)
    s, _, real = ig.load_data(manifest=csv_path, categorical=("note",))
    assert real and len(s) == 16 and s.labels["note"][3] == "abc"

    label, kind, y, n_out, _ = ig.manifest_task(s, "score")  # 4 integer values: classes unless declared
    assert (kind, n_out) == ("classification", 4)
    s, _, _ = ig.load_data(manifest=csv_path, numeric=("score",), categorical=("note", "code"))
    label, kind, y, n_out, _ = ig.manifest_task(s, "score", numeric=("score",))
    assert (kind, n_out) == ("regression", 1) and y.tolist() == [1 + i % 4 for i in range(16)]
    assert s.labels["code"].dtype.kind == "U"  # declared categorical: kept as the strings '10', '11'
    label, kind, y, n_out, groups = ig.manifest_task(s, "code", categorical=("note", "code"))
    assert (kind, n_out, groups) == ("classification", 2, ("code",))


def test_ignet_drawings_main_passes_the_declarations_to_the_loader(tmp_path, monkeypatch):
    """`main([... --numeric score --categorical note,code])` hands them to `load_data` (stopped there: no training)."""
    from experiments import ignet_drawings as ig

    csv_path = _tiny_manifest(tmp_path / "m", images=False)
    seen = {}

    class Stop(Exception):
        pass

    def load_data(data_dir=None, manifest=None, n=338, seed=0, numeric=(), categorical=()):
        seen.update(manifest=manifest, numeric=numeric, categorical=categorical)
        raise Stop

    monkeypatch.setattr(ig, "load_data", load_data)
    with pytest.raises(Stop):
        ig.main(["--manifest", str(csv_path), "--target", "score", "--numeric", "score", "--categorical", "note, code",
                 "--quick", "--out", str(tmp_path / "o")])
    assert seen == {"manifest": str(csv_path), "numeric": ("score",), "categorical": ("note", "code")}


@pytest.mark.slow
def test_ignet_drawings_manifest_quick_run_with_a_declared_numeric_target(tmp_path):
    """End to end through argparse: `--manifest m.csv --target score --numeric score --categorical note --quick`."""
    from experiments import ignet_drawings as ig

    csv_path = _tiny_manifest(tmp_path / "m")
    out = tmp_path / "o"
    assert ig.main(["--manifest", str(csv_path), "--target", "score", "--numeric", "score", "--categorical", "note",
                    "--quick", "--protocols", "grouped", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [(r["target"], r["task"]) for r in data["rows"]] == [("score", "regression")]
    assert (data["config"]["numeric"], data["config"]["categorical"]) == (["score"], ["note"])
    assert "--numeric score --categorical note" in data["command"]


@pytest.mark.parametrize("argv, needle", [
    (["--target", "score", "--numeric", "scroe"], "--numeric: unknown 'scroe'; valid choices: score, code, note"),
    (["--target", "score", "--categorical", "note,group"], "--categorical: unknown 'group'; valid choices: score"),
    (["--target", "score", "--categorical", "file"], "--categorical: unknown 'file'"),
    (["--target", "score", "--numeric", "score,score"], "--numeric: 'score,score' names a value twice"),
    (["--target", "score", "--numeric", "score", "--categorical", "code,score"],
     "--numeric and --categorical both name 'score': a column is one or the other"),
    (["--target", "sc0re"], "--target 'sc0re': no such label column in the manifest"),
])
def test_ignet_drawings_bad_column_declarations_fail_before_any_image_is_read(argv, needle, tmp_path):
    from experiments import common, ignet_drawings as ig

    csv_path = _tiny_manifest(tmp_path / "m", images=False)  # no image files: an error must come before reading any
    with pytest.raises(common.UserError) as e:
        ig.main(["--manifest", str(csv_path), *argv, "--quick", "--out", str(tmp_path / "o")])
    assert needle in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--numeric", "--categorical"])
def test_ignet_drawings_column_declarations_need_a_manifest(flag, tmp_path):
    from experiments import common, ignet_drawings as ig

    with pytest.raises(common.UserError, match=rf"^{flag} 'score' declares manifest columns; it needs --manifest CSV$"):
        ig.main([flag, "score", "--quick", "--out", str(tmp_path / "o")])
