"""All folds under one vmap match the folds one after another; 2 simulated devices match 1."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from _train_helpers import tiny_data, tiny_model
from jigcnn.train import PaperStopping, fit, fit_folds_vmapped, fold_keys, kfold_indices

HERE = pathlib.Path(__file__).resolve().parent
LOSS = "softmax_cross_entropy"


@pytest.mark.parametrize("fold_batch", [None, 1])
def test_vmapped_folds_match_sequential_folds(fold_batch):
    x, y = tiny_data(n=150)
    val = np.arange(130, 150)
    folds = kfold_indices(130, 2, stratify=y[:130], seed=0)
    # clearly unequal training sets (64 and 80 rows: 4 and 5 steps of 16), test parts as long as validation
    folds = [(tr[: 64 + 16 * f], te[:20]) for f, (tr, te) in enumerate(folds)]
    m = tiny_model()
    tx = optax.sgd(0.05, momentum=0.9)
    key = jax.random.key(4)
    kw = dict(loss=LOSS, metrics=("accuracy",), batch_size=16, stopping=PaperStopping(passes=3, tolerance=7))
    res = fit_folds_vmapped(m, tx, x, y, folds, key=key, validation=val, progress=False, fold_batch=fold_batch,
                            **kw)
    for f, ((tr, te), (ik, tk)) in enumerate(zip(folds, fold_keys(key, len(folds)))):
        p, s = m.init(ik)
        r = fit(m, p, s, tx, (x[tr], y[tr]), (x[te], y[te]), (x[val], y[val]), key=tk, progress=False, **kw)
        assert len(r.history) == len(res.histories[f]) == 3
        assert r.history["train_steps"] == res.histories[f]["train_steps"] == [len(tr) // 16] * 3
        for a, b in zip(r.history.metrics(), res.histories[f].metrics()):
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=2e-6, err_msg=f"fold {f} {k}")
        for a, b in zip(jax.tree.leaves(r.params), jax.tree.leaves(res.fold_params(f))):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
        assert r.stopped_reason == res.stopped_reasons[f]


def test_two_simulated_devices_match_one(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["JIGCNN_TEST_JAX_CACHE"] = str(HERE.parent / ".jax_cache")
    out = tmp_path / "dp.json"
    res = subprocess.run([sys.executable, str(HERE / "_train_helpers.py"), "dp", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["devices"] == 2 and r["fit_devices"] == 2  # the arrays really live on both devices
    assert r["step_diff"] < 1e-5
    np.testing.assert_allclose(r["loss"][0], r["loss"][1], rtol=1e-6)
    assert r["fit_diff"] < 1e-5
    if r["native"]["one"]:  # native kernels available: kept where the batch is split (shard_map per device)
        assert r["native"]["eval_one"] > 0
        assert r["native"]["two"] > 0 and r["native"]["eval_two"] > 0
    for a, b in zip(r["h1"], r["h2"]):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bench_folds_runs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_folds", HERE.parent / "experiments" / "bench_folds.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.bench(k=2, n=128, epochs=2, batch_size=16, features=2)
    assert r["speedup_total"] > 0 and r["speedup_steady"] > 0
