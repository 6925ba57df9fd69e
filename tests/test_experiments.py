"""Every experiment's ``--quick`` run, in-process, on tiny data: results.json with the agreed fields.

Each experiment is called as an importable function (``experiments.<name>.run(quick=True, out=...)``);
``main`` is exercised once through argparse. The drawings experiments use a 24-image synthetic
stand-in (generated into a temporary cache); the benchmarks use small slices of the shared data sets
(skipped when ../shared/data is absent).
"""

import importlib
import json
import sys
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
