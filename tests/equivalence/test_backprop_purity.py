"""The hand-written backprop package never calls jax's differentiation machinery."""

import ast
import pathlib

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
