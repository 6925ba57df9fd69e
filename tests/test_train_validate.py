"""fit and cross_validate refuse wrong arguments, labels, shapes, NaNs and checkpoint folders before the first step.

Every refusal here must come before any training: unless a test asks for a real optimizer,
``_fit`` passes one whose ``init`` raises (fit calls it before its first step), so a check that
came too late fails the test with "training started".
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from _train_helpers import split, tiny_data, tiny_model
from jigcnn import Dense, Flatten, Sequential, losses
from jigcnn.errors import BadDataError, CheckpointError, OutputPathError, UserError
from jigcnn.train import checkpoint as ckpt
from jigcnn.train import cross_validate, fit, validate

LOSS = "softmax_cross_entropy"


def _boom(*a, **k):
    raise AssertionError("training started before the inputs were refused")


TRIPWIRE = optax.GradientTransformation(_boom, _boom)


def _fit(train, test=None, validation=None, model=None, tx=TRIPWIRE, **kw):
    m = model or tiny_model()
    p, s = m.init(jax.random.key(0))
    args = dict(epochs=1, key=jax.random.key(1), loss=LOSS, progress=False)
    args.update(kw)
    return fit(m, p, s, tx, train, test, validation, **args)


def _tiny():
    x, y = tiny_data()
    return split(x, y)


# ---------------------------------------------------------------- labels (item 3)


@pytest.mark.parametrize("bad,match", [
    (12, r"fit: train y: label 12 at index 5 is outside 0\.\.9 \(10 outputs"),
    (-1, r"fit: train y: label -1 at index 5 is outside 0\.\.9 .*silently train as class 9"),
])
def test_labels_out_of_range_with_ten_classes_are_refused(bad, match):
    tr, te, _ = _tiny()
    y = tr[1].copy()
    y[5] = bad
    with pytest.raises(BadDataError, match=match):
        _fit((tr[0], y), te, model=tiny_model(classes=10))


def test_float_labels_must_be_whole_and_test_labels_are_checked_too():
    tr, te, va = _tiny()
    yf = tr[1].astype(np.float32)
    yf[3] = 1.7
    with pytest.raises(BadDataError, match=r"train y: label 1\.7 at index 3 is not a whole number"):
        _fit((tr[0], yf), te)
    yt = te[1].copy()
    yt[0] = 3
    with pytest.raises(BadDataError, match=r"fit: test y: label 3 at index 0 is outside 0\.\.2"):
        _fit(tr, (te[0], yt))
    yv = va[1].copy()
    yv[-1] = 7
    with pytest.raises(BadDataError, match=r"fit: validation y: label 7 at index 31"):
        _fit(tr, te, (va[0], yv))


def test_one_hot_rows_are_checked_against_the_outputs():
    tr, te, _ = _tiny()
    with pytest.raises(BadDataError, match=r"train y: targets of shape \(96, 4\) have 4 columns but the model has 3"):
        _fit((tr[0], np.eye(4, dtype=np.float32)[tr[1]]), te)
    hot = np.eye(3, dtype=np.float32)[tr[1]]
    hot[2] = [0.5, 0.0, 0.0]
    with pytest.raises(BadDataError, match=r"target row 2 sums to 0\.5, not 1"):
        _fit((tr[0], hot), te)
    hot[2] = [2.0, -1.0, 0.0]
    with pytest.raises(BadDataError, match=r"target 2 at row 2, column 0 is not in \[0, 1\]"):
        _fit((tr[0], hot), te)


def test_well_formed_labels_pass_the_checks():
    validate.check_class_targets(np.array([0, 2, 1]), 3, "y")
    validate.check_class_targets(np.array([0.0, 2.0]), 3, "y")                         # whole floats
    validate.check_class_targets(np.array([[0.2, 0.8, 0.0], [0, 0, 1]]), 3, "y")       # soft and one-hot
    validate.check_class_targets(optax.smooth_labels(jnp.eye(3), 0.1), 3, "y")


def test_the_losses_check_concrete_labels_but_not_tracers():
    logits = jnp.zeros((3, 10))
    with pytest.raises(BadDataError, match=r"softmax_cross_entropy: label 12 at index 2 is outside 0\.\.9"):
        losses.softmax_cross_entropy(logits, jnp.array([0, 1, 12]))
    with pytest.raises(BadDataError, match=r"nll: label -1 at index 1"):
        losses.nll(logits, jnp.array([0, -1, 2]))
    with pytest.raises(BadDataError, match=r"cross_entropy: label 1\.7 at index 1 is not a whole number"):
        losses.cross_entropy(jnp.full((3, 10), 0.1), jnp.array([0.0, 1.7, 2.0]))
    with pytest.raises(BadDataError, match=r"smoothed_softmax_cross_entropy: label 10 at index 0"):
        losses.SmoothedSoftmaxCrossEntropy(0.1)(logits, jnp.array([10, 1, 2]))
    # inside jit the labels are tracers: no host check (and no error at trace time)
    assert jnp.isfinite(jax.jit(losses.softmax_cross_entropy)(logits, jnp.array([0, 1, 2])))
    jax.jit(losses.softmax_cross_entropy)(logits, jnp.array([0, 1, 12]))


# ---------------------------------------------------------------- input shape (item 4)


def test_input_shape_mismatches_name_both_shapes():
    tr, te, _ = _tiny()
    with pytest.raises(BadDataError, match=r"fit: train x has shape \(96, 7, 8, 1\), but the model's input_shape "
                                           r"\(8, 8, 1\) needs \(N, 8, 8, 1\)$"):
        _fit((tr[0][:, :7], tr[1]), te)
    with pytest.raises(BadDataError, match=r"train x has shape \(96, 8, 8, 2\)"):
        _fit((np.concatenate([tr[0], tr[0]], -1), tr[1]), te)
    with pytest.raises(BadDataError, match=r"fit: test x has shape \(32, 8, 8\).*channel axis seems to be missing"):
        _fit(tr, (te[0][..., 0], te[1]))
    with pytest.raises(BadDataError, match=r"train x has shape \(8, 8, 1\).*one sample without the batch axis"):
        _fit((tr[0][0], tr[1][:1]), te)


def test_nchw_data_for_a_flatten_dense_net_is_refused_as_nchw():
    # Flatten + Dense would run silently on NCHW data (the same number of elements)
    model = Sequential([Flatten(), Dense(3)], input_shape=(8, 8, 3))
    x = np.zeros((40, 3, 8, 8), np.float32)
    with pytest.raises(BadDataError, match=r"\(40, 3, 8, 8\).*looks like NCHW.*x\.transpose\(0, 2, 3, 1\)"):
        _fit((x, np.zeros(40, np.int32)), model=model)


# ---------------------------------------------------------------- NaN in the data (item 5)


def test_non_finite_data_names_the_part_the_array_and_the_first_index():
    tr, te, va = _tiny()
    x = te[0].copy()
    x[4, 2, 3, 0] = np.nan
    x[9, 0, 0, 0] = np.inf
    with pytest.raises(BadDataError, match=r"fit: test x holds 2 non-finite value\(s\): the first is nan at sample 4, "
                                           r"position \(2, 3, 0\)"):
        _fit(tr, (x, te[1]))
    xt = tr[0].copy()
    xt[17, 1, 1, 0] = -np.inf
    with pytest.raises(BadDataError, match=r"fit: train x holds 1 .*-inf at sample 17"):
        _fit((jnp.asarray(xt), tr[1]), te)                  # a JAX array: reduced on the device first
    reg = Sequential([Flatten(), Dense(1)], input_shape=(8, 8, 1))
    col = [part[1][:, None].astype(np.float32) for part in (tr, te, va)]
    col[2][6, 0] = np.nan
    with pytest.raises(BadDataError, match=r"fit: validation y holds 1 non-finite.*sample 6"):
        _fit((tr[0], col[0]), (te[0], col[1]), (va[0], col[2]), model=reg, loss="mse", metrics=())
    with pytest.raises(BadDataError, match=r"fit: train y has shape \(96,\) but the model's outputs are \(N, 1\)"):
        _fit(tr, model=reg, loss="mse", metrics=())        # regression targets without their output axis


def test_a_zero_target_under_a_percentage_metric_is_refused_before_training():
    from jigcnn.metrics import age_mape_metric

    tr, te, _ = _tiny()
    reg = Sequential([Flatten(), Dense(1)], input_shape=(8, 8, 1))
    ytr = tr[1][:, None].astype(np.float32) + 1.0                 # all >= 1: MAPE is defined
    yte = te[1][:, None].astype(np.float32) + 1.0
    yte[[3, 11], 0] = 0.0
    with pytest.raises(BadDataError, match=r"fit: test y: the metric 'mape' divides by the target, which is 0 for "
                                           r"2 value\(s\) \(the first at sample 3, position \(0,\)\)"):
        _fit((tr[0], ytr), (te[0], yte), model=reg, loss="mse", metrics=("mape",))
    _fit((tr[0], ytr), (te[0], yte), model=reg, loss="mse", metrics=("mae",), tx=optax.sgd(1e-3))  # MAE: fine
    # ages trained as (age - 100) / 2: the age 0 is the target -50, which the metric maps back to 0
    yte = (te[1][:, None].astype(np.float32) - 1.0) * 4
    yte[5, 0] = -50.0
    with pytest.raises(BadDataError, match=r"fit: test y: the metric 'age' divides .* 1 value\(s\) \(the first "
                                           r"at sample 5"):
        _fit((tr[0], ytr), (te[0], yte), model=reg, loss="mse", metrics=(age_mape_metric(100.0, 2.0, "age"),))
    with pytest.raises(BadDataError, match=r"cross_validate: images/targets y: the metric 'mape' divides"):
        cross_validate(reg, te[0], yte * 0, optimizer=TRIPWIRE, loss="mse", metrics=("mape",), k=2,
                       augment_factor=2, epochs=1, batch_size=4, progress=False)


# ---------------------------------------------------------------- numbers (item 6)


@pytest.mark.parametrize("kw,match", [
    (dict(epochs=-3), r"fit: epochs must be >= 1, got -3"),
    (dict(epochs=0), r"fit: epochs must be >= 1, got 0"),
    (dict(epochs=2.5), r"fit: epochs must be a whole number >= 1, got 2\.5"),
    (dict(batch_size=0), r"fit: batch_size must be >= 1, got 0"),
    (dict(batch_size=-5), r"fit: batch_size must be >= 1, got -5"),
    (dict(batch_size=True), r"fit: batch_size must be a whole number"),
    (dict(batch_size=97), r"fit: batch_size 97 is larger than the 96 training samples"),
])
def test_numbers_that_make_no_sense_are_refused(kw, match):
    tr, te, _ = _tiny()
    with pytest.raises(UserError, match=match):
        _fit(tr, te, **kw)


# ---------------------------------------------------------------- checkpoint folders (items 9, 11)


def _dummy_checkpoint(folder, epoch=4):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ckpt.CHECKPOINT_NAME)
    ckpt.save(path, {"w": np.arange(3.0)}, {"epoch": epoch})
    return path


def test_a_run_without_resume_refuses_a_folder_holding_a_checkpoint(tmp_path):
    tr, te, _ = _tiny()
    path = _dummy_checkpoint(tmp_path / "run")
    before = open(path, "rb").read()
    with pytest.raises(CheckpointError, match=rf"fit: {tmp_path / 'run'} already holds a checkpoint "
                                              rf"\({path}, epoch 4\); refusing to overwrite it"
                                              r".*resume=True.*overwrite"):
        _fit(tr, te, checkpoint_dir=tmp_path / "run")
    assert open(path, "rb").read() == before


def test_overwrite_replaces_the_old_checkpoint(tmp_path):
    tr, te, _ = _tiny()
    path = _dummy_checkpoint(tmp_path / "run")
    ckpt.save(path, {"w": np.arange(3.0)}, {"epoch": 5})     # so a previous generation exists too
    assert os.path.exists(ckpt.previous_path(path))
    r = _fit(tr, te, tx=optax.sgd(0.05), checkpoint_dir=ckpt.overwrite(tmp_path / "run"))
    assert r.stopped_reason == "completed 1 epochs"
    assert ckpt.read_header(path)["meta"]["epoch"] == 1
    assert not os.path.exists(ckpt.previous_path(path))      # the old run's generation went with it
    with pytest.raises(UserError, match="contradict"):
        _fit(tr, te, checkpoint_dir=ckpt.overwrite(tmp_path / "run"), resume=True)


def test_resume_without_a_checkpoint_warns_and_restores_a_lone_previous_generation(tmp_path):
    tr, te, _ = _tiny()
    with pytest.warns(UserWarning, match=r"fit: resume=True but \S*nothing holds no checkpoint"):
        with pytest.raises(AssertionError, match="training started"):   # the checks passed: it went on to train
            _fit(tr, te, checkpoint_dir=tmp_path / "nothing", resume=True)
    path = _dummy_checkpoint(tmp_path / "run")
    ckpt.save(path, {"w": np.arange(3.0)}, {"epoch": 5})
    os.remove(path)
    with pytest.warns(UserWarning, match=r"checkpoint .* is missing: resuming from its previous generation"):
        validate.check_checkpoint_dir(tmp_path / "run", resume=True)
    assert ckpt.read_header(path)["meta"]["epoch"] == 4


def test_unwritable_checkpoint_folders_are_refused_before_training(tmp_path):
    tr, te, _ = _tiny()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match=rf"checkpoint_dir {tmp_path / 'file'} is a file, not a folder"):
        _fit(tr, te, checkpoint_dir=tmp_path / "file")
    with pytest.raises(OutputPathError, match=rf"{tmp_path / 'file' / 'sub'} cannot be created: .*file is a file"):
        _fit(tr, te, checkpoint_dir=tmp_path / "file" / "sub")
    assert isinstance(OutputPathError("x"), OSError) and isinstance(OutputPathError("x"), ValueError)


def test_a_folder_where_no_file_can_be_created_is_refused(monkeypatch, tmp_path):
    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(validate.tempfile, "mkstemp", no_space)
    with pytest.raises(OutputPathError, match=rf"out {tmp_path / 'new'} \(its existing parent {tmp_path}\) is not "
                                              r"writable: No space left on device"):
        validate.check_writable_dir(tmp_path / "new", "out")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- cross_validate


def test_cross_validate_checks_before_any_fold(monkeypatch, tmp_path):
    import jigcnn.train.loop as loop

    monkeypatch.setattr(loop, "fit", lambda *a, **k: pytest.fail("a fold started"))
    x, y = tiny_data(n=40)
    kw = dict(optimizer=optax.sgd(0.05), loss=LOSS, k=2, augment_factor=2, epochs=1, progress=False)
    y_bad = y.copy()
    y_bad[3] = 12
    with pytest.raises(BadDataError, match=r"cross_validate: images/targets y: label 12 at index 3"):
        cross_validate(tiny_model(), x, y_bad, **kw)
    with pytest.raises(BadDataError, match=r"cross_validate: images/targets x has shape \(40, 1, 8, 8\).*NCHW"):
        cross_validate(tiny_model(), x.transpose(0, 3, 1, 2), y, **kw)
    x_nan = x.copy()
    x_nan[7, 0, 0, 0] = np.nan
    with pytest.raises(BadDataError, match=r"cross_validate: images holds 1 non-finite.*sample 7"):
        cross_validate(tiny_model, x_nan, y, **kw)                       # a factory: the model-free checks
    with pytest.raises(UserError, match=r"cross_validate: batch_size 81 is larger than the whole expanded"):
        cross_validate(tiny_model(), x, y, batch_size=81, **kw)
    with pytest.raises(UserError, match=r"cross_validate: epochs must be >= 1, got -3"):
        cross_validate(tiny_model(), x, y, **{**kw, "epochs": -3})
    _dummy_checkpoint(tmp_path / "cv" / "fold_1")
    with pytest.raises(CheckpointError, match=r"already holds fold checkpoints \(.*fold_1/checkpoint\.npz\)"):
        cross_validate(tiny_model(), x, y, checkpoint_dir=tmp_path / "cv", **kw)


def test_validate_imports_neither_the_loop_nor_cross_validation():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(validate))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {"jigcnn.train.loop", "jigcnn.train.cv", "jigcnn.losses"} & names, names
