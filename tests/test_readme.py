"""The README's promises: its "A first look" snippet runs and its gradients agree; two set-up commands."""

import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_first_look_snippet_runs_and_its_three_gradients_agree(tmp_path):
    (snippet,) = _blocks(_section("A first look"), "python")
    # run as written, in its own process (configure_process changes process-wide settings), then report
    # what it computed so the test checks results, not only that nothing raised
    probe = snippet + (
        "\nimport json as _json\n"
        "_d = lambda a, b: max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))\n"
        "print('RESULT', _json.dumps({'loss': float(loss), 'ref_loss': float(ref_loss), 'plain_loss': float(plain_loss),"
        " 'manual_vs_ref': _d(grads, ref_grads), 'plain_vs_ref': _d(plain_grads, ref_grads),"
        " 'grad_scale': max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads)),"
        " 'conv1_keys': sorted(aux.intermediates['conv1'])}))\n")
    script = tmp_path / "first_look.py"
    script.write_text(probe)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT / "src"),
           "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Total" in p.stdout or "params" in p.stdout.lower(), p.stdout[:2000]  # model.summary() printed
    (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    r = json.loads(line[len("RESULT "):])
    assert r["loss"] > 0 and abs(r["loss"] - r["ref_loss"]) <= 1e-5 * r["loss"]
    assert abs(r["plain_loss"] - r["ref_loss"]) <= 1e-5 * r["loss"]
    assert r["grad_scale"] > 0
    # float32: the hand-written and the reference-kernel gradients agree with the oracle to rounding
    assert r["manual_vs_ref"] <= 1e-4 * r["grad_scale"], r
    assert r["plain_vs_ref"] <= 1e-4 * r["grad_scale"], r
    assert r["conv1_keys"], r


def test_the_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _blocks(_section("Set-up: two commands"), "bash")
    assert len(commands) == 2, commands
    main_job, tests = (c.strip() for c in commands)
    assert "-m experiments." in main_job and "pip install" in main_job
    assert tests.endswith("-m pytest -q") and 'pip install -e ".[test]"' in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\.venv-ci/bin/python -m pytest -q$", ci, flags=re.M), ci
    assert 'pip install --quiet -e ".[test]"' in ci
    assert re.search(r'"\$rc" -eq 5', ci), "CI must treat pytest's exit code 5 (no tests) explicitly"
