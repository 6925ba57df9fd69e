"""The per-epoch bookkeeping shared by fit and fit_folds_vmapped (jigcnn.train.epochs)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _train_helpers import tiny_data, tiny_model
from jigcnn import Conv2D, Dense, Flatten, Sequential
from jigcnn.train import DivergenceError, PaperStopping, Patience, fit, fit_folds_vmapped, fold_keys
from jigcnn.train import epochs as ep

LOSS = "softmax_cross_entropy"


# ---------------------------------------------------------------- fit and fit_folds_vmapped: one bookkeeping


def _one_fold_both_ways(model, tx, x, y, *, n_train, loss, metrics, batch_size, epochs, **kw):
    """(fit's result, fit_folds_vmapped's result) for one fold: the first n_train rows, validation the rest."""
    tr, va = np.arange(n_train), np.arange(n_train, len(y))
    key = jax.random.key(7)
    (ik, tk), = fold_keys(key, 1)
    common = dict(loss=loss, metrics=metrics, batch_size=batch_size, epochs=epochs, progress=False, **kw)
    p, s = model.init(ik)
    single = fit(model, p, s, tx, (x[tr], y[tr]), validation=(x[va], y[va]), key=tk, on_divergence="stop", **common)
    folds = fit_folds_vmapped(model, tx, x, y, [(tr, None)], key=key, validation=va, on_divergence="stop", **common)
    return single, folds


def _assert_same_history(a, b):
    assert [r.keys() for r in a.metrics()] == [r.keys() for r in b.metrics()]
    for ra, rb in zip(a.metrics(), b.metrics()):
        for k in ra:
            np.testing.assert_allclose(ra[k], rb[k], rtol=2e-5, atol=2e-6, err_msg=k)


def test_fit_and_vmapped_folds_give_the_same_records_and_non_finite_divergence_message():
    x, y = tiny_data(n=128)
    lr = lambda count: jnp.where(count < 6, 0.05, 1e38)  # noqa: E731 - 2 sane epochs of 3 steps, then overflow
    single, folds = _one_fold_both_ways(tiny_model(), optax.sgd(lr), x, y, n_train=96, loss=LOSS,
                                        metrics=("accuracy",), batch_size=32, epochs=5)
    assert len(single.history) == len(folds.histories[0]) == 2
    _assert_same_history(single.history, folds.histories[0])
    assert single.stopped_reason.startswith("training diverged at epoch 3, step ")
    assert folds.stopped_reasons[0] == single.stopped_reason
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(folds.fold_params(0))):  # the last good ones
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def _regression():
    x, _ = tiny_data(n=96)
    t = (60.0 + 10.0 * x.mean(axis=(1, 2, 3)))[:, None].astype(np.float32)  # an "age in months"
    model = Sequential([Conv2D(features=1, kernel_size=3), Flatten(), Dense(features=1)], input_shape=(8, 8, 1))
    return model, x, t


def test_lr_1e6_blows_the_loss_up_finitely_and_is_a_divergence_in_fit_and_vmapped_folds():
    # Adam's steps are ~lr whatever the gradient, and MAE's gradient is bounded: the loss goes to ~1e13
    # and stays finite, so only the growth rule sees it (before it, the run ended "completed 3 epochs")
    model, x, t = _regression()
    kw = dict(n_train=64, loss="mae", metrics=("mae",), batch_size=16, epochs=3)
    single, folds = _one_fold_both_ways(model, optax.adam(1e6), x, t, **kw)
    loss = single.history["train_loss"]
    assert len(loss) == 1 and np.isfinite(loss[0]) and loss[0] > 1e10
    assert single.stopped_reason.startswith("training diverged at epoch 1: the training loss ")
    assert "more than 1e+04 times max(|initial loss|, 1)" in single.stopped_reason
    assert folds.stopped_reasons[0] == single.stopped_reason
    _assert_same_history(single.history, folds.histories[0])
    # raised by default, with the record of the epoch that blew up and no step or layers
    p, s = model.init(jax.random.key(0))
    with pytest.raises(DivergenceError, match="epoch 1: the training loss") as info:
        fit(model, p, s, optax.adam(1e6), (x[:64], t[:64]), epochs=3, batch_size=16, key=jax.random.key(1),
            loss="mae", metrics=("mae",), progress=False)
    e = info.value
    assert e.epoch == 1 and e.step is None and e.layers == () and len(e.result.history) == 1
    # a sane rate on the same problem never trips it; loss_growth_limit=None switches the rule off
    ok = fit(model, p, s, optax.adam(0.05), (x[:64], t[:64]), epochs=3, batch_size=16, key=jax.random.key(1),
             loss="mae", metrics=("mae",), progress=False)
    assert ok.stopped_reason == "completed 3 epochs"
    off = fit(model, p, s, optax.adam(1e6), (x[:64], t[:64]), epochs=2, batch_size=16, key=jax.random.key(1),
              loss="mae", metrics=("mae",), progress=False, loss_growth_limit=None)
    assert off.stopped_reason == "completed 2 epochs"


def test_vmapped_folds_raise_on_divergence_when_asked_and_refuse_what_they_cannot_do(tmp_path):
    model, x, t = _regression()
    folds = [(np.arange(64), None), (np.arange(16, 80), None)]
    kw = dict(key=jax.random.key(7), loss="mae", metrics=("mae",), batch_size=16, epochs=2, progress=False)
    with pytest.raises(DivergenceError, match=r"^fold 0: training diverged at epoch 1: the training loss") as info:
        fit_folds_vmapped(model, optax.adam(1e6), x, t, folds, on_divergence="raise", **kw)
    assert info.value.epoch == 1 and len(info.value.result.histories) == 2
    with pytest.raises(ValueError, match="on_divergence must be 'raise' or 'stop', got 'ignore'"):
        fit_folds_vmapped(model, optax.adam(1e-3), x, t, folds, on_divergence="ignore", **kw)
    for bad in (0.5, float("inf"), "big", True):
        with pytest.raises(ValueError, match=f"fit_folds_vmapped: loss_growth_limit must be None .* got {bad!r}"):
            fit_folds_vmapped(model, optax.adam(1e-3), x, t, folds, loss_growth_limit=bad, **kw)
    with pytest.raises(ValueError, match="fit: loss_growth_limit must be None"):
        fit(model, *model.init(jax.random.key(0)), optax.adam(1e-3), (x, t), epochs=1, key=jax.random.key(1),
            loss="mae", progress=False, loss_growth_limit=0)
    for name, value in (("checkpoint_dir", tmp_path), ("resume", True), ("mesh", object()),
                        ("diagnostic", object()), ("on_epoch_end", print)):
        with pytest.raises(ValueError, match=f"fit_folds_vmapped does not support {name}="):
            fit_folds_vmapped(model, optax.adam(1e-3), x, t, folds, **{name: value}, **kw)


# ---------------------------------------------------------------- after_epoch, one behaviour at a time


def _stats(loss=0.5, acc=0.75, steps=3, bad_step=-1, loss_finite=True, bad_layers=()):
    return {"loss": np.float32(loss), "accuracy": np.float32(acc), "steps": np.int32(steps),
            "bad_step": np.int32(bad_step), "bad_loss_finite": np.bool_(loss_finite),
            "bad_grad_finite": {"conv1": np.bool_("conv1" not in bad_layers),
                                "dense3": np.bool_("dense3" not in bad_layers)}}


EVALS = {"val": {"loss": np.float32(0.7), "accuracy": np.float32(0.6)}}


def _after(run, rules, epoch=1, stats=None, evals=EVALS, **kw):
    kw.setdefault("weights", lambda: ({"w": jnp.ones(2)}, {}))
    return ep.after_epoch(run, _stats() if stats is None else stats, evals, epoch=epoch, rules=rules, time=0.25,
                          wall_clock=lambda: 9.0, **kw)


def test_after_epoch_builds_the_history_record():
    rules = ep.EpochRules(5, ("accuracy",))
    run, out = _after(ep.new_run(rules, initial_loss=1.0), rules, epoch=2)
    assert out.record == {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.75, "train_steps": 3, "val_loss":
                          pytest.approx(0.7), "val_accuracy": pytest.approx(0.6), "time": 0.25, "wall_time": 9.0}
    assert list(out.record) == ["epoch", "train_loss", "train_accuracy", "train_steps", "val_loss", "val_accuracy",
                                "time", "wall_time"]
    assert run.history.records == [out.record] and not out.stop and run.stopped_reason is None


def test_after_epoch_stops_a_non_finite_epoch_without_recording_or_checkpointing_it():
    rules = ep.EpochRules(5, ("accuracy",))
    saved = []
    run, out = _after(ep.new_run(rules), rules, epoch=3, stats=_stats(bad_step=1, loss_finite=False,
                                                                     bad_layers=("dense3",)),
                      checkpoint=lambda r, meta: saved.append(meta))
    assert out.diverged and out.stop and out.record is None and out.step == 1 and out.layers == ("dense3",)
    assert out.reason == ("training diverged at epoch 3, step 1 (0-based within the epoch): the loss is non-finite; "
                          "non-finite gradient (or update) in layer(s) dense3; params kept at their last good values"
                          " (the step was not applied)")
    assert run.stopped_reason == out.reason and run.stop_kind == "diverged"
    assert len(run.history) == 0 and saved == []


def test_after_epoch_flags_a_loss_grown_beyond_the_limit_as_diverged():
    rules = ep.EpochRules(5, ("accuracy",), loss_growth_limit=1e4)
    saved = []
    run, out = _after(ep.new_run(rules, initial_loss=2.0), rules, stats=_stats(loss=2.0e4 * 1.01),
                      checkpoint=lambda r, meta: saved.append(meta))
    assert out.diverged and out.step is None and out.layers == ()
    assert out.reason.startswith("training diverged at epoch 1: the training loss 2.02e+04 is more than 1e+04 times")
    assert "(initial loss 2)" in out.reason
    assert run.history.records == [out.record] and run.stop_kind == "diverged" and saved == []
    # just below the limit: an ordinary epoch
    _, out = _after(ep.new_run(rules, initial_loss=2.0), rules, stats=_stats(loss=2.0e4 * 0.99))
    assert not out.diverged and not out.stop
    # the floor: a net that starts almost perfect (loss 1e-6) may go to 0.5 without "diverging"
    assert not ep.loss_blew_up(0.5, 1e-6) and ep.loss_blew_up(1.01e4, 1e-6)
    assert not ep.loss_blew_up(1e30, None) and not ep.loss_blew_up(1e30, float("nan"))
    assert not ep.loss_blew_up(1e30, 1.0, None)


def test_after_epoch_applies_the_stopping_rule():
    rule = PaperStopping(passes=10, tolerance=1)
    rules = ep.EpochRules(10, ("accuracy",), rule, "val_accuracy")
    run = ep.new_run(rules)
    run, out = _after(run, rules, epoch=1)
    assert not out.stop and out.improved and run.best_epoch == 1
    worse = {"val": {"loss": np.float32(0.7), "accuracy": np.float32(0.5)}}
    run, out = _after(run, rules, epoch=2, evals=worse)
    assert out.stop and not out.improved and run.stop_kind == "rule"
    assert out.reason == run.stopped_reason and "got worse 1 times in a row" in out.reason
    # a monitor the records lack is named
    bad = ep.EpochRules(10, ("accuracy",), rule, "test_accuracy")
    with pytest.raises(ValueError, match="fit: stopping monitors 'test_accuracy', not in the history keys"):
        _after(ep.new_run(bad), bad)


def test_after_epoch_keeps_a_copy_of_the_best_weights_for_restore_best():
    rules = ep.EpochRules(10, ("accuracy",), Patience(patience=3, monitor="val_loss"), "val_loss", restore_best=True)
    w = {"w": jnp.array([1.0, 2.0])}
    run, _ = _after(ep.new_run(rules), rules, epoch=1, weights=lambda: (w, {}))
    assert run.best_epoch == 1 and run.best[0]["w"] is not w
    np.testing.assert_array_equal(run.best[0]["w"], w["w"])
    worse = {"val": {"loss": np.float32(0.9), "accuracy": np.float32(0.6)}}
    run2, out = _after(run, rules, epoch=2, evals=worse, weights=lambda: ({"w": jnp.zeros(2)}, {}))
    assert not out.improved and run2.best is run.best and run2.best_epoch == 1
    # without restore_best nothing is copied (the weights are not even read)
    plain = rules._replace(restore_best=False)
    run3, _ = _after(ep.new_run(plain), plain, weights=lambda: pytest.fail("weights read"))
    assert run3.best is None and run3.best_epoch == 1


def test_after_epoch_runs_the_diagnostic_hook_into_the_record():
    class Recorder:
        unit = "step"

        def __init__(self):
            self.seen = []

        def on_epoch_end(self, epoch, record, params, state):
            self.seen.append((epoch, record["train_loss"], float(params["w"][0])))
            return {"mav/conv1/weight_grad_mav": 0.125}

        def history(self):
            return {"step": [3]}

    rec = Recorder()
    rules = ep.EpochRules(5, ("accuracy",))
    run, out = _after(ep.new_run(rules), rules, epoch=4, diagnostic=rec)
    assert rec.seen == [(4, 0.5, 1.0)]
    assert out.record["mav/conv1/weight_grad_mav"] == 0.125 and list(out.record)[-1] == "wall_time"
    assert run.history.diagnostics == {"step": [3]}


def test_after_epoch_completes_the_run_and_checkpoints_what_resume_reads():
    rules = ep.EpochRules(2, ("accuracy",), Patience(patience=5, monitor="val_loss"), "val_loss")
    saved = []
    run = ep.new_run(rules, initial_loss=1.5)
    run, out = _after(run, rules, epoch=1, checkpoint=lambda r, meta: saved.append((r, meta)))
    assert not out.stop and saved[-1][0] is run
    run, out = _after(run, rules, epoch=2, checkpoint=lambda r, meta: saved.append((r, meta)))
    assert out.stop and out.reason == "completed 2 epochs" and run.stop_kind == "epochs"
    meta = saved[-1][1]
    assert meta == {"epoch": 2, "history": run.history.records, "stop_state": run.stop_state, "best_epoch": 1,
                    "stopped_reason": "completed 2 epochs", "stop_kind": "epochs", "initial_loss": 1.5}
    # resumed with more epochs: it goes on; with the same number, or stopped by its rule, it stays stopped
    more, start = ep.resume_run(meta, rules._replace(max_epochs=4))
    assert start == 3 and more.stopped_reason is None and more.initial_loss == 1.5 and len(more.history) == 2
    same, _ = ep.resume_run(meta, rules)
    assert same.stopped_reason == "completed 2 epochs"
    ruled, _ = ep.resume_run({**meta, "stop_kind": "rule", "stopped_reason": "patience: ..."},
                             rules._replace(max_epochs=4))
    assert ruled.stopped_reason == "patience: ..."
    # a checkpoint from before the growth rule: the first epoch's loss is the reference
    old = {k: v for k, v in meta.items() if k != "initial_loss"}
    assert ep.resume_run(old, rules)[0].initial_loss == 0.5


# ---------------------------------------------------------------- layering


def test_jigcnn_train_modules_import_each_other_without_a_cycle():
    """Every import in jigcnn/train/*.py (also inside functions) between its modules: the graph is acyclic."""
    import ast
    import pathlib

    import jigcnn.train

    folder = pathlib.Path(jigcnn.train.__file__).parent
    mods = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {}
    for m in mods:
        edges = set()
        for node in ast.walk(ast.parse((folder / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from .x import y
                    base = "jigcnn.train" + (f".{base}" if base else "")
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            edges |= {n.split(".")[2] for n in names if n.startswith("jigcnn.train.") and n.split(".")[2] in mods}
        graph[m] = edges - {m}
    assert graph["epochs"] == set() and "loop" not in graph["parallel"] and "cv" not in graph["loop"]
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
