"""The epoch loop: history, determinism, divergence, early stopping rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _train_helpers import split, tiny_data, tiny_model
from jigcnn.train import DivergenceError, PaperStopping, Patience, fit
from jigcnn.train import checkpoint as ckpt

LOSS = "softmax_cross_entropy"


def _fit(**kw):
    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    kw.setdefault("epochs", 3)
    kw.setdefault("progress", False)
    tx = kw.pop("tx", optax.sgd(0.05, momentum=0.9))
    return fit(m, p, s, tx, tr, te, va, key=jax.random.key(1), loss=LOSS, **kw)


def test_history_and_determinism(capsys):
    a = _fit()
    b = _fit(progress="always")  # the tqdm bar (forced on: pytest's stderr is not a TTY) changes nothing
    assert "3/3" in capsys.readouterr().err
    assert len(a.history) == 3 and a.stopped_reason == "completed 3 epochs"
    keys = set(a.history.keys())
    assert {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "val_loss", "val_accuracy",
            "time", "wall_time", "train_steps"} <= keys
    assert a.history["train_steps"] == [3, 3, 3]  # 96 // 32, partial batch dropped
    assert a.history["val_loss"][-1] < a.history["val_loss"][0]  # it learns
    # same config and seed: identical metrics, identical weights
    assert a.history.metrics() == b.history.metrics()
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(u, v)
    assert a.metrics["val_loss"] == a.history["val_loss"][-1]


def test_fit_leaves_the_process_alone(monkeypatch):
    """fit changes neither the allocator nor the compilation cache: those are the program's choice."""
    import jax

    from jigcnn import allocator, compile_cache

    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda **kw: calls.append(kw) or True)
    monkeypatch.setattr(compile_cache, "enable", lambda *a, **kw: calls.append(("cache", a, kw)))
    before = jax.config.jax_compilation_cache_dir
    _fit(epochs=1)
    assert calls == [] and jax.config.jax_compilation_cache_dir == before


def test_divergence_stops_with_layer_epoch_step_and_keeps_last_good_checkpoint(tmp_path):
    # a sane learning rate for 2 epochs (3 steps each), then an absurd one: epoch 3 blows up
    lr = lambda count: jnp.where(count < 6, 0.05, 1e38)  # noqa: E731
    with pytest.raises(DivergenceError) as info:
        _fit(tx=optax.sgd(lr), epochs=5, checkpoint_dir=tmp_path)
    e = info.value
    msg = str(e)
    assert e.epoch == 3 and e.step in (0, 1) and f"epoch 3, step {e.step}" in msg
    assert "non-finite" in msg and e.layers and set(e.layers) <= {"conv1", "dense3"}
    assert all(name in msg for name in e.layers)
    assert len(e.result.history) == 2
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(e.result.params))
    assert ckpt.read_header(tmp_path / ckpt.CHECKPOINT_NAME)["meta"]["epoch"] == 2
    # on_divergence="stop" returns instead
    r = _fit(tx=optax.sgd(lr), epochs=5, on_divergence="stop")
    assert r.stopped_reason.startswith(f"training diverged at epoch 3, step {e.step}")


def test_nan_loss_is_reported():
    # NaN data are refused before training (jigcnn.train.validate): a NaN weight makes every loss NaN instead
    x, y = tiny_data()
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    p = {**p, "dense3": {**p["dense3"], "kernel": p["dense3"]["kernel"].at[0, 0].set(jnp.nan)}}
    with pytest.raises(DivergenceError, match=r"epoch 1, step 0.*loss is non-finite"):
        fit(m, p, s, optax.sgd(0.1), (x[:96], y[:96]), epochs=2, key=jax.random.key(1), loss=LOSS,
            progress=False)


def test_paper_stopping_rule():
    rule = PaperStopping(passes=10, tolerance=3)
    st = rule.init()
    # accuracy: up, down, down, up (reset), down, down, down -> stop at the third consecutive decay
    seq = [0.5, 0.6, 0.55, 0.5, 0.7, 0.65, 0.6, 0.59, 0.9]
    stops = []
    for e, v in enumerate(seq, start=1):
        st, d = rule.update(st, e, v, "val_accuracy")
        stops.append(d.stop)
        if d.stop:
            break
    assert stops == [False] * 7 + [True]
    assert "3 times in a row" in d.reason and st["best_epoch"] == 5
    # equal is not worse; the pass cap
    st = rule.init()
    for e in range(1, 11):
        st, d = rule.update(st, e, 1.0, "val_loss")
    assert d.stop and "10 passes" in d.reason
    assert PaperStopping().max_epochs == 10 and PaperStopping().tolerance == 7


def test_patience_rule_and_restore_best():
    rule = Patience(patience=2)
    st = rule.init()
    out = []
    for e, v in enumerate([1.0, 0.8, 0.85, 0.9, 0.1], start=1):
        st, d = rule.update(st, e, v, "val_loss")
        out.append((d.stop, d.improved))
        if d.stop:
            break
    assert out == [(False, True), (False, True), (False, False), (True, False)]
    assert st["best_epoch"] == 2
    # in fit: restore the best epoch's weights (a too-large lr makes validation noisy; 0.3 grows the training
    # loss 2e4-fold by epoch 3, which is now a divergence, 0.2 only 200-fold)
    r = _fit(epochs=6, stopping=Patience(patience=2, monitor="val_loss"), tx=optax.sgd(0.2, momentum=0.9))
    best = int(np.argmin(r.history["val_loss"])) + 1
    assert r.best_epoch == best
    np.testing.assert_allclose(r.metrics["val_loss"], r.history["val_loss"][best - 1], rtol=1e-6)


def test_paper_stopping_caps_fit_at_passes():
    r = _fit(epochs=None, stopping=PaperStopping(passes=2, tolerance=7))
    assert len(r.history) == 2 and "2 passes" in r.stopped_reason


def test_regression_metrics_and_default_monitor():
    from jigcnn import Conv2D, Dense, Flatten, Sequential
    from jigcnn.train import default_monitor

    x, _ = tiny_data(n=96)
    t = (60.0 + 10.0 * x.mean(axis=(1, 2, 3)))[:, None].astype(np.float32)  # an "age in months"
    m = Sequential([Conv2D(features=1, kernel_size=3), Flatten(), Dense(features=1)], input_shape=(8, 8, 1))
    p, s = m.init(jax.random.key(0))
    r = fit(m, p, s, optax.adam(0.05), (x[:64], t[:64]), validation=(x[64:], t[64:]), epochs=3,
            key=jax.random.key(1), loss="mae", metrics=("mape", "mae"), stopping=Patience(patience=5),
            progress=False)
    assert default_monitor(("mape", "mae"), True, False) == "val_mape"
    assert {"train_mape", "val_mape", "val_mae", "val_loss"} <= set(r.history.keys())
    np.testing.assert_allclose(r.history["val_mae"], r.history["val_loss"], rtol=1e-6)
    assert r.history["val_mape"][-1] < r.history["val_mape"][0]


def test_fit_records_the_fig4_diagnostic_into_the_history():
    from jigcnn.diagnostics import DiagnosticRecorder, diagnose

    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = tiny_model()
    recorder = DiagnosticRecorder(m, LOSS, every=2, batch=va)
    res = _fit(epochs=4, diagnostic=recorder)
    mav_keys = [k for k in res.history.keys() if k.startswith("mav/")]
    assert mav_keys, res.history.keys()
    key = next(k for k in mav_keys if k.endswith("weight_grad_mav"))
    recorded = res.history[key]
    assert [v is not None for v in recorded] == [False, True, False, True]  # epochs 2 and 4 (every=2)
    # the last record is the diagnostic of the returned weights on the validation batch
    layer = key.split("/")[1]
    d = diagnose(m, res.params, res.state, va[0], va[1], LOSS)
    np.testing.assert_allclose(recorded[-1], d[layer].weight_grad_mav, rtol=1e-5)


@pytest.mark.parametrize("grad_method", ["autodiff", "manual"])
def test_python_and_scan_epoch_loops_give_the_same_numbers(grad_method):
    a = _fit(epoch_loop="python", grad_method=grad_method)
    b = _fit(epoch_loop="scan", grad_method=grad_method)
    assert [r["train_steps"] for r in a.history.records] == [r["train_steps"] for r in b.history.records]
    for ra, rb in zip(a.history.metrics(), b.history.metrics()):
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], rtol=1e-5, err_msg=k)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_unknown_epoch_loop_is_refused():
    with pytest.raises(ValueError, match="epoch_loop must be one of"):
        _fit(epoch_loop="unrolled")


def test_fit_records_the_diagnostic_every_n_steps():
    from jigcnn.diagnostics import DiagnosticRecorder

    x, y = tiny_data()
    _, _, va = split(x, y)
    recorder = DiagnosticRecorder(tiny_model(), LOSS, every=2, batch=va, unit="step")
    res = _fit(epochs=2, diagnostic=recorder)  # 3 steps per epoch: global steps 1..6
    assert res.history.diagnostics["step"] == [2, 4, 6]
    assert not [k for k in res.history.keys() if k.startswith("mav/")]
    layer_cols = [k for k in res.history.diagnostics if k.endswith("weight_grad_mav")]
    assert layer_cols and all(len(res.history.diagnostics[k]) == 3 for k in layer_cols)
    from jigcnn.diagnostics import diagnose

    last = diagnose(tiny_model(), res.params, res.state, va[0], va[1], LOSS)  # step 6 = the final weights
    for k in layer_cols:
        np.testing.assert_allclose(res.history.diagnostics[k][-1], last[k.split("/")[0]].weight_grad_mav, rtol=1e-5)
    with pytest.raises(ValueError, match="per-step diagnostic needs epoch_loop='python'"):
        _fit(epochs=1, diagnostic=recorder, epoch_loop="scan")
