"""The hand-written backprop never calls autodiff and reaches kernels only through jigcnn.ops; the reference oracle is plain lax/jnp."""

import ast
import pathlib

import jax

import jigcnn.backprop

FORBIDDEN = {"grad", "value_and_grad", "vjp", "jvp", "linear_transpose", "custom_vjp", "custom_jvp",
             "jacfwd", "jacrev", "hessian", "linearize", "checkpoint", "remat"}


def _violations(path):
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jax"):
            found += [f"{path.name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name in FORBIDDEN]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN:
            found.append(f"{path.name}:{node.lineno}: {node.id}")
    return found


def test_no_autodiff_in_backprop():
    files = sorted(pathlib.Path(jigcnn.backprop.__file__).parent.glob("*.py"))
    assert len(files) >= 5
    violations = [v for f in files for v in _violations(f)]
    assert not violations, violations


def test_the_checker_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import jax\nfrom jax import vjp\ng = jax.grad(lambda x: x)\n")
    assert len(_violations(bad)) == 2


# --- the two sides share nothing: the hand-written side reaches kernels only through jigcnn.ops,
# and the reference oracle reaches none of them

SRC = pathlib.Path(jigcnn.backprop.__file__).resolve().parents[1]  # src/jigcnn


def _imports(path):
    """Every jigcnn module a file imports, anywhere in it (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("jigcnn")}


def test_backprop_reaches_the_kernels_only_through_ops():
    files = sorted(pathlib.Path(jigcnn.backprop.__file__).parent.glob("*.py"))
    bad = [f"{f.name}: {m}" for f in files for m in _imports(f) if m.startswith("jigcnn.fast")]
    assert not bad, bad


def test_only_ops_imports_the_fast_kernels():
    """Nothing in src/jigcnn outside jigcnn/ops.py and jigcnn/fast/ imports jigcnn.fast (native, tangents, barrier, ...)."""
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        rel = f.relative_to(SRC).as_posix()
        if rel == "ops.py" or rel.startswith("fast/"):
            continue
        bad += [f"{rel}: {m}" for m in _imports(f) if m.startswith("jigcnn.fast")]
    assert not bad, bad


REFERENCE_FORBIDDEN_IMPORTS = ("jigcnn.ops", "jigcnn.fast", "jigcnn.backprop", "jigcnn.activations", "jigcnn.losses",
                               "jigcnn.grad")


def test_reference_module_is_plain():
    """jigcnn.reference defines no custom derivative, primitive or FFI call, and imports no path it checks."""
    path = SRC / "reference.py"
    tree = ast.parse(path.read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
        {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    forbidden = {"custom_jvp", "custom_vjp", "Primitive", "ffi", "ffi_call", "pure_callback", "defjvp", "defvjp"}
    assert not names & forbidden, names & forbidden
    bad = [m for m in _imports(path) if m.startswith(REFERENCE_FORBIDDEN_IMPORTS)]
    assert not bad, bad


def _primitives(jaxpr, out):
    for eqn in jaxpr.eqns:
        out.add(eqn.primitive.name)
        for value in eqn.params.values():
            for j in (value if isinstance(value, (list, tuple)) else [value]):
                inner = getattr(j, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    _primitives(inner, out)
                elif hasattr(j, "eqns"):
                    _primitives(j, out)
    return out


def test_reference_gradient_program_is_plain_lax(x64):
    """The oracle's gradient program, for every layer type and the zoo's nets, holds no custom rule, primitive or FFI call."""
    import jax.numpy as jnp

    from jigcnn import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool, PReLU, Sequential, zoo
    from jigcnn import reference

    every_layer = Sequential([
        Conv2D(4, 3, padding="same", activation="relu"), BatchNorm(), Activation("elu"), PReLU(), MaxPool(2),
        Conv2D(3, 2, strides=2, pad_mode="edge", padding=1, activation="bipolar_sigmoid"), AvgPool(2, 1), Dropout(0.3),
        Flatten(), Dense(5, activation="softmax"),
    ], input_shape=(12, 12, 2))
    nets = [(every_layer, "cross_entropy"), (zoo.ignet_fig5(1), "mae"), (zoo.ignet_deep(7, 1), "mae"),
            (zoo.lenet5(head_activation=None), "softmax_cross_entropy")]
    for model, loss in nets:
        params, state = model.init(jax.random.key(0), dtype=jnp.float64)
        x = jnp.zeros((2, *model.input_shape), jnp.float64)
        t = jnp.zeros((2, 1)) if loss == "mae" else jnp.zeros((2,), jnp.int32)
        fn = reference.value_and_grad(model, loss)
        jaxpr = jax.make_jaxpr(lambda p, s, x, t: fn(p, s, x, t, train=True, key=jax.random.key(1)))(params, state, x, t)
        prims = _primitives(jaxpr.jaxpr, set())
        bad = sorted(p for p in prims if "custom" in p or p.startswith("jigcnn") or "ffi" in p or "callback" in p)
        assert not bad, (model.names, bad)
        assert "conv_general_dilated" in prims
    # the walker sees nested rules: the fast path's own gradient program has them
    from jigcnn.grad import autodiff_value_and_grad

    model = zoo.ignet_fig5(1)
    params, state = model.init(jax.random.key(0), dtype=jnp.float64)
    fast = autodiff_value_and_grad(model, "mae")
    jaxpr = jax.make_jaxpr(lambda p, x: fast(p, state, x, jnp.zeros((2, 1))))(params, jnp.zeros((2, 58, 36, 1)))
    assert any("custom" in p or p.startswith("jigcnn") for p in _primitives(jaxpr.jaxpr, set()))
