"""The Fig. 4 diagnostic: every column cross-checked against autodiff, table, recorder."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import zoo
from jigcnn.activations import ELEMENTWISE, canonical_name, get_activation
from jigcnn.diagnostics import COLUMNS, DiagnosticRecorder, diagnose, diagnostics_to_history, make_diagnose
from jigcnn.grad import resolve_loss
from jigcnn.initializers import ignet
from jigcnn.layers import Activation, Conv2D, Dense, Flatten
from jigcnn.model import Sequential


def _act(name, param):
    return get_activation(name, param)


def autodiff_mavs(model, params, state, x, targets, loss):
    """Each column computed independently: forward up to the layer for In, jax.grad w.r.t. a zero
    perturbation added to the pre-activation for the deltas, jax.grad w.r.t. params for dL/dw."""
    _, loss_fn = resolve_loss(loss)

    def run(params, eps):
        h, inputs, zs = x, {}, {}
        for layer in model.layers:
            p, s = params.get(layer.name, {}), state.get(layer.name, {})
            if isinstance(layer, (Conv2D, Dense)):
                inputs[layer.name] = h
                z = layer.preactivation(p, s, h) + eps[layer.name]
                zs[layer.name] = z
                h = _act(layer.activation, layer.activation_param)(z)
            elif isinstance(layer, Activation):
                inputs[layer.name] = h
                z = h + eps[layer.name]
                zs[layer.name] = z
                h = _act(layer.fn, layer.param)(z)
            else:
                h, _ = layer.apply(p, s, h)
        return loss_fn(h, targets), (inputs, zs)

    acts = {layer.name: (layer.activation, layer.activation_param) if isinstance(layer, (Conv2D, Dense))
            else (layer.fn, layer.param) for layer in model.layers if isinstance(layer, (Conv2D, Dense, Activation))}
    shapes = jax.eval_shape(lambda: run(params, {n: 0.0 for n in acts})[1][1])
    eps = {n: jnp.zeros(v.shape, v.dtype) for n, v in shapes.items()}
    (value, (inputs, zs)), (g_params, g_eps) = jax.value_and_grad(run, argnums=(0, 1), has_aux=True)(params, eps)

    def act_deriv(z, name, param):
        f = _act(name, param)
        if canonical_name(name) in ELEMENTWISE:
            return jax.jvp(f, (z,), (jnp.ones_like(z),))[1]
        return jax.vmap(lambda zi: jnp.diag(jax.jacfwd(f)(zi)))(z)  # softmax: the Jacobian's diagonal

    out = {}
    for name, z in zs.items():
        act, param = acts[name]
        kernel = params.get(name, {}).get("kernel")
        out[name] = {
            "input_mav": float(jnp.mean(jnp.abs(inputs[name]))),
            "act_deriv_mav": float(jnp.mean(jnp.abs(act_deriv(z, act, param)))),
            "weight_mav": math.nan if kernel is None else float(jnp.mean(jnp.abs(kernel))),
            "delta_mav": float(jnp.mean(jnp.abs(g_eps[name]))),
            "weight_grad_mav": math.nan if kernel is None else float(jnp.mean(jnp.abs(g_params[name]["kernel"]))),
        }
    return float(value), out


def _mixed_net():
    return Sequential([
        Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="tanh", initializer=ignet(1.0, 0.1), name="c1"),
        Conv2D(2, 2, padding=1, pad_mode="edge", activation="relu", initializer=ignet(2.0, 0.2), name="c2"),
        Flatten(),
        Dense(3, activation="leaky_relu", bias="learn", initializer=ignet(3.0, 0.1), name="fc"),
    ], input_shape=(7, 6, 2))


CASES = {
    "fig5_mae": (lambda: zoo.ignet_fig5(1, filters=3, kernel=(3, 3), input_shape=(8, 6, 1)), "mae", "reg"),
    "mixed_mse": (_mixed_net, "mse", "reg3"),
    "softmax_head_ce": (lambda: zoo.ignet_fig5(4, filters=2, kernel=(2, 3), input_shape=(6, 5, 1),
                                               head_activation="softmax", W=(1.0, 3.0)), "cross_entropy", "cls"),
}


def _batch(model, kind, n=4):
    x = jax.random.uniform(jax.random.key(1), (n,) + model.input_shape)
    if kind == "cls":
        return x, jnp.arange(n) % model.shapes()[-1][0]
    k = model.shapes()[-1][0]
    return x, jax.random.uniform(jax.random.key(2), (n, k), minval=-1.0, maxval=1.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_column_matches_autodiff(case):
    build, loss, kind = CASES[case]
    model = build()
    params, state = model.init(jax.random.key(0))
    x, t = _batch(model, kind)
    d = diagnose(model, params, state, x, t, loss)
    value, ref = autodiff_mavs(model, params, state, x, t, loss)
    assert d.loss == pytest.approx(value, rel=1e-5)
    assert set(d.layers) == set(ref)
    for name, cols in ref.items():
        for c in COLUMNS:
            got, want = getattr(d[name], c), cols[c]
            if math.isnan(want):
                assert math.isnan(got), (name, c)
            else:
                assert got == pytest.approx(want, rel=2e-4, abs=1e-9), (case, name, c, got, want)


def test_connection_table_weight_mav_counts_connected_entries():
    table = np.array([[1, 0], [1, 1], [0, 1]], bool)
    model = Sequential([Conv2D(2, 2, connection_table=table, initializer=ignet(1.0), name="c"), Flatten(),
                        Dense(1, initializer=ignet(1.0), name="fc")], input_shape=(4, 4, 3))
    params, state = model.init(jax.random.key(3))
    x, t = _batch(model, "reg")
    d = diagnose(model, params, state, x, t, "mae")
    k = np.asarray(params["c"]["kernel"])
    assert d["c"].weight_mav == pytest.approx(np.abs(k).sum() / (4 * table.sum()), rel=1e-5)


def test_table_dict_and_single_compilation():
    build, loss, kind = CASES["fig5_mae"]
    model = build()
    params, state = model.init(jax.random.key(0))
    x, t = _batch(model, kind)
    fn = make_diagnose(model, loss)
    d1 = fn(params, state, x, t, step=3)
    d2 = fn(jax.tree.map(lambda a: a * 2, params), state, x, t)
    assert fn.jitted._cache_size() == 1
    assert d1.step == 3 and d2.step is None
    text = d1.table()
    assert str(d1) == text
    lines = text.splitlines()
    assert "***dL/dw" in text and "*In" in text and "*N'" in text and "*dL/db" in text
    assert any(line.startswith("conv1") for line in lines) and any(line.startswith("fc") for line in lines)
    dd = d1.to_dict()
    assert dd["step"] == 3 and set(dd["layers"]) == {"conv1", "fc"}
    assert dd["layers"]["fc"]["weight_grad_mav"] == d1["fc"].weight_grad_mav
    assert set(d1.in_band((0.0, 1e9)).values()) == {True}
    with pytest.raises(KeyError, match="no diagnostic row"):
        d1["nope"]


def test_softmax_head_row_has_no_weight_columns():
    build, loss, kind = CASES["softmax_head_ce"]
    model = build()
    params, state = model.init(jax.random.key(0))
    d = diagnose(model, params, state, *_batch(model, kind), loss)
    assert math.isnan(d["head"].weight_mav) and math.isnan(d["head"].weight_grad_mav)
    assert "head" not in d.weight_grad_mavs()
    assert " -" in [line for line in d.table().splitlines() if line.startswith("head")][0]


def test_recorder_every_n_steps_and_history():
    build, loss, kind = CASES["fig5_mae"]
    model = build()
    params, state = model.init(jax.random.key(0))
    batch = _batch(model, kind)
    rec = DiagnosticRecorder(model, loss, every=2, batch=batch)
    got = [rec(step, params, state) for step in range(5)]
    assert [g is not None for g in got] == [True, False, True, False, True]
    h = rec.history()
    assert h["step"] == [0, 2, 4] and len(h["conv1/weight_grad_mav"]) == 3
    assert diagnostics_to_history(rec.records) == h
    extra = rec.on_epoch_end(6, {}, params, state)
    assert extra["mav/fc/weight_grad_mav"] == rec.records[-1]["fc"].weight_grad_mav
    assert rec.on_epoch_end(7, {}, params, state) == {}
    with pytest.raises(ValueError, match="positive int"):
        DiagnosticRecorder(model, loss, every=0)
