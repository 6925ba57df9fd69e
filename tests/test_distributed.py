"""Several processes on 127.0.0.1 (JAX's distributed runtime, gloo): launcher, flags, fit, folds, a lost process.

The multi-process runs start ``tests/_dist_helpers.py`` as 2 processes (ports chosen free at run
time); the single-process reference runs in the test process with the same arguments. Equality
is within float32 rounding: the 2-process step averages two shards' gradients (``pmean``) where
one process takes the mean over the whole batch, so sums are associated differently
(tolerance: rtol 1e-5, atol 1e-6 on every history value and weight).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jigcnn import distributed
from jigcnn.distributed import launch as launcher

HERE = pathlib.Path(__file__).resolve().parent
HELPER = str(HERE / "_dist_helpers.py")
RTOL, ATOL = 1e-5, 1e-6


def _env(**extra):
    env = dict(os.environ)
    for k in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        env.pop(k, None)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["JIGCNN_TEST_JAX_CACHE"] = str(HERE.parent / ".jax_cache")
    env.update(extra)
    return env


def _launch(args, n=2, timeout=240):
    """Run the helper as ``n`` processes with the launcher; (status, forwarded output)."""
    out = io.StringIO()
    status = launcher.launch([sys.executable, HELPER, *args], n, env=_env(), out=out, timeout=timeout)
    return status, out.getvalue()


def _close(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, f"{what}[{i}]")
    elif isinstance(a, str):
        assert a == b, what
    else:
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=RTOL, atol=ATOL,
                                   err_msg=what)


def _single_fit(epochs):
    sys.path.insert(0, str(HERE))
    from _dist_helpers import dist_model, fit_kwargs
    from _train_helpers import split, tiny_data

    from jigcnn.train import fit

    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = dist_model()
    p, s = m.init(jax.random.key(0))
    kw, tx = fit_kwargs()
    r = fit(m, p, s, tx, tr, te, va, epochs=epochs, **kw)
    return {"metrics": r.metrics, "history": r.history.metrics(),
            "params": [np.asarray(a).tolist() for a in jax.tree.leaves(r.params)]}


# ---------------------------------------------------------------- cheap: no JAX in the children


def test_launcher_prefixes_output_and_returns_the_failing_status():
    code = ("import os, sys, time; i = int(os.environ['JAX_PROCESS_ID']); "
            "print('hello from', i, 'of', os.environ['JAX_NUM_PROCESSES'], sys.argv[1]); sys.stdout.flush(); "
            "time.sleep(0.2 * i); sys.exit(3 if i == 1 else 0)")
    out = io.StringIO()
    status = launcher.launch([sys.executable, "-c", code, "arg{process_id}"], 2, out=out, timeout=60)
    text = out.getvalue()
    assert status == 3
    assert "[p0] hello from 0 of 2 arg0" in text and "[p1] hello from 1 of 2 arg1" in text


def test_launcher_stops_the_others_when_one_fails():
    code = "import os, sys, time; i = int(os.environ['JAX_PROCESS_ID']); time.sleep(60 if i == 0 else 0); sys.exit(i)"
    t0 = time.monotonic()
    status = launcher.launch([sys.executable, "-c", code], 2, out=io.StringIO(), grace=1.0, timeout=60)
    assert status == 1 and time.monotonic() - t0 < 20


def test_launcher_reports_a_process_killed_by_a_signal(capsys):
    code = "import os, signal; i = int(os.environ['JAX_PROCESS_ID']); i and os.kill(os.getpid(), signal.SIGKILL)"
    assert launcher.launch([sys.executable, "-c", code], 2, out=io.StringIO(), timeout=60) == 128 + 9
    assert "process 1 was killed by SIGKILL; stopped the others" in capsys.readouterr().err


def test_launcher_command_line_errors(capsys):
    with pytest.raises(SystemExit):
        launcher.main(["-n", "0", "--", "true"])
    assert "-n must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        launcher.main(["-n", "2"])
    assert "no command" in capsys.readouterr().err
    assert launcher.main(["-n", "2", "--", sys.executable, "-c", "pass"]) == 0


@pytest.mark.parametrize("args, env, message", [
    (("127.0.0.1:1234", 2, 2), {}, "process_id 2 is out of range for 2 process(es)"),
    (("127.0.0.1:1234", 2, -1), {}, "process_id (--process-id / JAX_PROCESS_ID) must be >= 0, got -1"),
    (("127.0.0.1:1234", "two", 0), {}, "num_processes (--num-processes / JAX_NUM_PROCESSES) must be a whole number"),
    (("localhost", 2, 0), {}, "coordinator must be HOST:PORT"),
    (("127.0.0.1:99999", 2, 0), {}, "port in 1..65535"),
    ((None, 2, 1), {}, "missing: coordinator"),
    (("127.0.0.1:1234", None, None), {}, "missing: num_processes (--num-processes / JAX_NUM_PROCESSES), process_id"),
    ((None, None, None), {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "5"}, "process_id 5 is out of range"),
])
def test_resolve_refuses_bad_configurations(args, env, message):
    with pytest.raises(distributed.DistributedError) as e:
        distributed.resolve(*args, env=env)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resolve_reads_the_environment_and_schedulers():
    assert distributed.resolve(env={}) == ("single", None, 1, 0)
    assert distributed.resolve(env={"SLURM_JOB_ID": "7"}) == ("auto", None, None, None)
    assert distributed.resolve(env={"SLURM_JOB_ID": "7"}, auto_detect=False) == ("single", None, 1, 0)
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "3", "JAX_PROCESS_ID": "2"}
    assert distributed.resolve(env=env) == ("join", "h:1", 3, 2)
    assert distributed.resolve(None, 4, 1, env=env) == ("join", "h:1", 4, 1)  # arguments before the environment
    assert distributed.resolve(None, 1, None, env={}) == ("single", None, 1, 0)


@pytest.mark.parametrize("flags, message", [
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], "process_id 2 is out of range"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "coordinator must be HOST:PORT"),
    (["--num-processes", "2", "--process-id", "0"], "missing: coordinator"),
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0", "--distributed-timeout", "0"],
     "--distributed-timeout must be a number of seconds > 0, got 0.0"),
])
def test_cli_refuses_bad_distributed_flags_before_loading_data(flags, message, capsys, monkeypatch):
    from jigcnn.train import cli

    for k in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded before the flags were checked"))
    assert cli.main(["--net", "thesis_mlp", "--data", "digits", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unreachable_coordinator_fails_within_the_timeout():
    # process 1 of 2 with nobody serving the coordinator port: a clear error within the timeout, not a hang
    env = _env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{launcher.free_port()}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID="1")
    code = "import jigcnn.distributed as d; d.initialize(timeout=1)"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90)
    assert res.returncode == 2 and time.monotonic() - t0 < 60
    assert "error: process 1 of 2 could not join the coordinator 127.0.0.1:" in res.stderr
    assert "within 1 s (is process 0 running" in res.stderr


# ---------------------------------------------------------------- 2 processes


def test_two_processes_fit_matches_one_process(tmp_path):
    """2 processes x 1 device, global batch 16 (8 rows each): the same history and weights as 1 process.

    The net has dropout and the run an input augmentation: their draws must be one process's.

    One epoch (6 steps, test and validation evaluated) keeps it cheap; only process 0 writes the checkpoint.
    """
    ck = tmp_path / "ck_{process_id}"
    status, text = _launch(["fit", "--epochs", "1", "--ckpt", str(ck), "--out", str(tmp_path / "r{process_id}.json")])
    assert status == 0, text[-4000:]
    r0, r1 = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in (0, 1))
    assert r0["process"] == [0, 2] and r1["process"] == [1, 2] and r0["devices"] == 2  # the params span both
    one = _single_fit(1)
    for r in (r0, r1):
        _close(one["history"], r["history"], "history")
        _close(one["params"], r["params"], "params")
        _close(one["metrics"], r["metrics"], "metrics")
    assert (tmp_path / "ck_0" / "checkpoint.npz").exists()
    assert not (tmp_path / "ck_1").exists() or not list((tmp_path / "ck_1").iterdir())  # process 1 wrote nothing


@pytest.mark.slow
def test_resume_with_another_process_count_continues_the_run(tmp_path):
    """A 2-process checkpoint resumed by 1 process == an uninterrupted 1-process run (same global batch, keys)."""
    status, text = _launch(["fit", "--epochs", "2", "--ckpt", str(tmp_path / "ck"),
                            "--out", str(tmp_path / "r{process_id}.json")])
    assert status == 0, text[-4000:]
    res = subprocess.run([sys.executable, HELPER, "fit", "--epochs", "3", "--resume", "--ckpt", str(tmp_path / "ck"),
                          "--out", str(tmp_path / "resumed.json")], env=_env(), capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["process"] == [0, 1] and "epoch 3" in res.stdout and "epoch 1" not in res.stdout
    three = _single_fit(3)
    _close(three["history"], resumed["history"], "resumed history")
    _close(three["params"], resumed["params"], "resumed params")


@pytest.mark.slow
def test_slurm_variables_are_auto_detected(tmp_path):
    """SLURM_* variables (as srun sets them; node list 127.0.0.1) and no JAX_*: JAX's own detection joins the run."""
    job = next(j for j in range(1000, 5096) if _port_free(j % 4096 + 61440))  # JAX's port: job id % 4096 + 61440
    procs = []
    for i in (0, 1):
        env = _env(SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2", SLURM_PROCID=str(i),
                   SLURM_LOCALID=str(i), SLURM_STEP_NUM_NODES="1")
        procs.append(subprocess.Popen([sys.executable, HELPER, "fit", "--epochs", "1",
                                       "--out", str(tmp_path / "r{process_id}.json")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    one = _single_fit(1)
    for i in (0, 1):
        got = json.loads((tmp_path / f"r{i}.json").read_text())
        assert got["process"] == [i, 2]
        _close(one["params"], got["params"], f"process {i} params")


def _port_free(port):
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_folds_spread_over_two_processes_match_one_process(tmp_path):
    status, text = _launch(["cv", "--out", str(tmp_path / "cv{process_id}.json")])
    assert status == 0, text[-4000:]
    sys.path.insert(0, str(HERE))
    from _dist_helpers import cv_kwargs
    from _train_helpers import tiny_data, tiny_model

    from jigcnn.train import cross_validate

    x, y = tiny_data(n=60)
    ref = cross_validate(tiny_model(), x, y, np.arange(60) // 2, **cv_kwargs())
    for i in (0, 1):  # every process holds every fold's result, equal to the one-process run's
        got = json.loads((tmp_path / f"cv{i}.json").read_text())
        assert got["owners"] == [0, 1]  # fold f trained by process f % 2
        _close([f["metrics"] for f in ref.folds], got["folds"], f"process {i} folds")
        _close([h.metrics() for h in ref.histories], got["histories"], f"process {i} histories")
        _close(ref.mean, got["mean"], f"process {i} mean")


def _cli(*flags, data_dir):
    return [sys.executable, "-m", "jigcnn.train", "--net", "thesis_mlp", "--data", "digits", "--data-dir",
            str(data_dir), "--batch-size", "64", "--seed", "0", *flags]


def test_processes_started_with_different_configurations_are_refused(tmp_path):
    status, text = _launch(["fit", "--epochs", "1{process_id}", "--out", str(tmp_path / "r{process_id}.json")],
                           timeout=120)
    assert status != 0
    assert "was started with another fit configuration (epochs: 10 here vs 11 in process 1" in text \
        or "was started with another fit configuration (epochs: 11 here vs 10 in process 0" in text, text[-3000:]


def test_cli_through_the_launcher_refuses_a_batch_not_divisible_by_the_devices(shared_data_dir):
    status, text = _launch_cmd(_cli("--epochs", "1", "--batch-size", "63", data_dir=shared_data_dir),  # the last one counts
                               timeout=120)
    assert status == 2, text[-3000:]
    for p in ("[p0] ", "[p1] "):
        assert (f"{p}python -m jigcnn.train: error: fit: batch_size 63 is not divisible by the 2 devices of the mesh "
                f"(2 processes): use a multiple of 2") in text, text[-3000:]


def _start_pair(make_argv):
    port = launcher.free_port()
    procs = []
    for i in (0, 1):
        argv = make_argv(i, f"127.0.0.1:{port}")
        procs.append(subprocess.Popen(argv, env=_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    return procs


def _kill_one_of_two(tmp_path, data_dir, victim):
    """Start a long 2-process command-line run, SIGKILL ``victim`` after the first checkpoint; (output, survivor)."""
    ck = tmp_path / "ck"
    procs = _start_pair(lambda i, coord: _cli("--epochs", "400", "--checkpoint-dir", str(ck), "--coordinator", coord,
                                              "--num-processes", "2", "--process-id", str(i), data_dir=data_dir))
    survivor = procs[1 - victim]
    try:
        deadline = time.monotonic() + 240
        while not (ck / "checkpoint.npz").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                procs[0].communicate(timeout=30)[0][-3000:] if procs[0].poll() is not None else "no checkpoint"
            time.sleep(0.05)
        os.kill(procs[victim].pid, signal.SIGKILL)
        t0 = time.monotonic()
        out, _ = survivor.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert survivor.returncode != 0 and elapsed < 60, (survivor.returncode, elapsed, out[-3000:])
    return out, survivor


@pytest.mark.slow
def test_when_process_0_is_killed_the_runtime_ends_the_other(tmp_path, shared_data_dir):
    """Process 0 serves the coordination service: when it dies, JAX's runtime terminates the others at once
    (its own fatal message, SIGABRT), before jigcnn can print its line; bounded, non-zero, no hang."""
    out, survivor = _kill_one_of_two(tmp_path, shared_data_dir, victim=0)
    assert "another task died" in out or "lost process 0" in out, out[-3000:]


def test_a_killed_process_stops_the_other_and_a_resume_ends_like_an_uninterrupted_run(tmp_path, shared_data_dir):
    """SIGKILL of process 1 mid-run: process 0 exits with status 3 naming it, well within 60 s; both
    restarted with --resume continue from process 0's last checkpoint to the metrics of one uninterrupted
    process (within 1e-4)."""
    out, survivor = _kill_one_of_two(tmp_path, shared_data_dir, victim=1)
    assert survivor.returncode == 3, out[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("python -m jigcnn.train: error: process 0 of 2: lost process 1 (host "), out[-3000:]
    assert "restart all 2 processes with --resume" in last
    # restart both with --resume for two more epochs than the checkpoint holds
    from jigcnn.train import checkpoint as ckpt

    ck = tmp_path / "ck"
    epoch = int(ckpt.read_header(ck / "checkpoint.npz")["meta"]["epoch"])
    assert 1 <= epoch < 400
    target = str(epoch + 2)
    status, text = _launch_cmd(_cli("--epochs", target, "--checkpoint-dir", str(ck), "--resume",
                                    "--out", str(tmp_path / "resumed{process_id}.json"), data_dir=shared_data_dir))
    assert status == 0, text[-4000:]
    res = subprocess.run(_cli("--epochs", target, "--out", str(tmp_path / "one.json"), data_dir=shared_data_dir),
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    for i in (0, 1):
        got = json.loads((tmp_path / f"resumed{i}.json").read_text())
        assert got["processes"] == 2 and len(got["history"]["epoch"]) == epoch + 2
        assert got["metrics"].keys() == one["metrics"].keys()
        for k, v in one["metrics"].items():
            assert abs(got["metrics"][k] - v) < 1e-4, (k, got["metrics"][k], v)


def _launch_cmd(command, n=2, timeout=300):
    out = io.StringIO()
    return launcher.launch(command, n, env=_env(), out=out, timeout=timeout), out.getvalue()
