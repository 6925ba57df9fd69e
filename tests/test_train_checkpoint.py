"""Checkpoints: round trip of any optax state (masks, PRNG keys), refusal of foreign ones, kill and resume."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import optax
import pytest

from _train_helpers import split, tiny_data, tiny_model
from jigcnn.train import CheckpointMismatch, fit
from jigcnn.train import checkpoint as ckpt

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "_train_helpers.py"
LOSS = "softmax_cross_entropy"


def test_round_trip_with_masks_and_keys(tmp_path):
    from jigcnn.optim import freezeconnect

    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    tx = optax.chain(optax.adam(1e-3), freezeconnect(0.5, key=jax.random.key(3), resample="never"))
    o = tx.init(p)
    tree = {"params": p, "state": s, "opt_state": o, "key": jax.random.key(9)}
    path = tmp_path / "c.npz"
    ckpt.save(path, tree, {"epoch": 3}, fingerprint="abc")
    assert [f.name for f in tmp_path.iterdir()] == ["c.npz"]  # no temp file left behind
    back, meta = ckpt.load(path, tree, fingerprint="abc")
    assert meta == {"epoch": 3}
    la, ta = jax.tree_util.tree_flatten(tree)
    lb, tb = jax.tree_util.tree_flatten(back)
    assert ta == tb
    for a, b in zip(la, lb):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key)
            np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_checkpoint_from_another_model_or_config_is_refused(tmp_path):
    x, y = tiny_data()
    tr, te, _ = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    kw = dict(epochs=1, key=jax.random.key(1), loss=LOSS, progress=False, checkpoint_dir=tmp_path)
    fit(m, p, s, optax.sgd(0.05), tr, te, **kw)
    m2 = tiny_model(features=3)
    p2, s2 = m2.init(jax.random.key(0))
    with pytest.raises(CheckpointMismatch, match=r"another model/config.*layer 1 is Conv2D\(.*features=2.*features=3"):
        fit(m2, p2, s2, optax.sgd(0.05), tr, te, resume=True, **kw)
    with pytest.raises(CheckpointMismatch, match=r"config 'batch_size' is 32 in the checkpoint vs 16 now"):
        fit(m, p, s, optax.sgd(0.05), tr, te, resume=True, batch_size=16, **kw)
    # same fingerprint but another optimizer state structure
    with pytest.raises(CheckpointMismatch, match="another structure"):
        fit(m, p, s, optax.adam(0.05), tr, te, resume=True, **kw)


def test_resume_in_process_matches_uninterrupted(tmp_path):
    x, y = tiny_data()
    tr, te, va = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    kw = dict(key=jax.random.key(1), loss=LOSS, progress=False)
    tx = optax.sgd(0.05, momentum=0.9)
    full = fit(m, p, s, tx, tr, te, va, epochs=4, **kw)
    fit(m, p, s, tx, tr, te, va, epochs=2, checkpoint_dir=tmp_path, **kw)
    resumed = fit(m, p, s, tx, tr, te, va, epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.history.metrics() == full.history.metrics()
    assert resumed.metrics == full.metrics
    # resuming a finished run just returns it
    again = fit(m, p, s, tx, tr, te, va, epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert again.history.metrics() == full.history.metrics() and again.metrics == full.metrics


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["JIGCNN_TEST_JAX_CACHE"] = str(HERE.parent / ".jax_cache")
    return env  # XLA_FLAGS included: the child must compile like this process for bit-equal results


def test_sigkill_then_resume_gives_the_same_final_metrics(tmp_path):
    epochs = 5
    # the reference, uninterrupted, in this process (same machine, same compiled code)
    import _train_helpers as h

    ref_out = tmp_path / "ref.json"
    h._run(type("A", (), dict(ckpt=str(tmp_path / "ref_ckpt"), epochs=epochs, resume=False, sleep=0.0,
                              out=str(ref_out)))())
    ref = json.loads(ref_out.read_text())
    ck = tmp_path / "ckpt"
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(SCRIPT), "run", "--ckpt", str(ck), "--epochs", str(epochs), "--out", str(out)]
    proc = subprocess.Popen(cmd + ["--sleep", "30", "--sleep-after", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_env(), text=True)
    watchdog = threading.Timer(240, proc.kill)  # never hang the suite on a stuck child
    watchdog.start()
    try:
        # "epoch N" is printed after epoch N's checkpoint is on disk; after epoch 2 it sleeps: kill it there
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["epoch 1", "epoch 2"], lines
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert ckpt.read_header(ck / ckpt.CHECKPOINT_NAME)["meta"]["epoch"] == 2
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["epoch", "3", "epoch", "4", "epoch", "5"]
    got = json.loads(out.read_text())
    assert got["history"] == ref["history"]
    assert got["metrics"] == ref["metrics"]
    assert got["params"] == ref["params"]


# ---------------------------------------------------------------- damaged files, generations, temp files


def _save_two(folder):
    """A checkpoint of epoch 2 whose previous generation is epoch 1; returns (latest, previous)."""
    path = folder / ckpt.CHECKPOINT_NAME
    tree = {"w": np.arange(4096, dtype=np.float32)}
    ckpt.save(path, tree, {"epoch": 1})
    ckpt.save(path, {"w": tree["w"] + 1}, {"epoch": 2})
    return path, pathlib.Path(ckpt.previous_path(path))


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 40)
    elif how == "bit-flipped":  # the middle of the 16 KiB array's data: only the CRC can tell
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:])


LIKE = {"w": np.zeros(4096, np.float32)}


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "bit-flipped"])
def test_a_damaged_checkpoint_is_an_error_naming_its_path(tmp_path, how):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save(path, {"w": np.arange(4096, dtype=np.float32)}, {"epoch": 1})
    _damage(path, how)
    with pytest.raises(ckpt.CheckpointCorrupt, match=f"checkpoint {path} is (unreadable|empty|corrupt)"):
        ckpt.load(path, LIKE)
    if how != "bit-flipped":  # the header member is intact after a flip in the array data
        with pytest.raises(ckpt.CheckpointCorrupt, match=str(path)):
            ckpt.read_header(path)
    assert issubclass(ckpt.CheckpointCorrupt, ValueError)


def test_the_previous_generation_is_kept_and_a_corrupt_latest_falls_back_to_it(tmp_path):
    path, prev = _save_two(tmp_path)
    assert ckpt.read_header(prev)["meta"]["epoch"] == 1 and ckpt.read_header(path)["meta"]["epoch"] == 2
    _damage(path, "truncated")
    with pytest.warns(UserWarning, match=rf"checkpoint {path} is unreadable.*resuming from the previous checkpoint "
                                         rf"{prev} \(epoch 1\); the corrupt file is kept as "
                                         r".*checkpoint\.corrupt\.npz"):
        tree, meta = ckpt.load(path, LIKE)
    assert meta["epoch"] == 1 and float(tree["w"][1]) == 1.0
    assert not path.exists() and (tmp_path / "checkpoint.corrupt.npz").exists()
    # the next save does not turn the corrupt file into the previous generation
    ckpt.save(path, {"w": np.zeros(4096, np.float32)}, {"epoch": 2})
    assert ckpt.read_header(prev)["meta"]["epoch"] == 1


def test_both_generations_damaged_names_both(tmp_path):
    path, prev = _save_two(tmp_path)
    _damage(path, "garbage")
    _damage(prev, "empty")
    with pytest.raises(ckpt.CheckpointCorrupt, match=rf"{path} is unreadable.*previous generation is unreadable too: "
                                                     rf"checkpoint {prev} is empty"):
        ckpt.load(path, LIKE)
    assert path.exists()  # nothing moved aside when nothing could be loaded


def test_a_corrupt_latest_is_not_kept_as_the_previous_generation(tmp_path):
    path, prev = _save_two(tmp_path)
    _damage(path, "bit-flipped")
    with pytest.warns(UserWarning, match=rf"{path} is corrupt: member 'leaf_0.npy' fails its CRC check; "
                                         r"not keeping it"):
        ckpt.save(path, {"w": np.zeros(4096, np.float32)}, {"epoch": 3})
    assert ckpt.read_header(prev)["meta"]["epoch"] == 1


def test_fit_resumes_from_the_previous_generation_when_the_latest_is_truncated(tmp_path):
    x, y = tiny_data()
    tr, te, _ = split(x, y)
    m = tiny_model()
    p, s = m.init(jax.random.key(0))
    kw = dict(key=jax.random.key(1), loss=LOSS, progress=False)
    full = fit(m, p, s, optax.sgd(0.05), tr, te, epochs=3, **kw)
    fit(m, p, s, optax.sgd(0.05), tr, te, epochs=2, checkpoint_dir=tmp_path, **kw)
    _damage(tmp_path / ckpt.CHECKPOINT_NAME, "truncated")
    with pytest.warns(UserWarning, match=r"resuming from the previous checkpoint .*checkpoint\.prev\.npz \(epoch 1\)"):
        resumed = fit(m, p, s, optax.sgd(0.05), tr, te, epochs=3, checkpoint_dir=tmp_path, resume=True, **kw)
    assert resumed.history.metrics() == full.history.metrics()


def test_stale_temp_files_of_a_killed_save_are_removed_at_the_next_save_and_load(tmp_path):
    path = tmp_path / ckpt.CHECKPOINT_NAME
    stale = [tmp_path / ".checkpoint.k1ll3d.tmp.npz", tmp_path / ".checkpoint.prev.x7.tmp.npz"]
    other = [tmp_path / ".results.abc.tmp.json", tmp_path / "notes.txt"]
    for f in stale + other:
        f.write_bytes(b"half written")
    ckpt.save(path, {"w": np.zeros(3)}, {"epoch": 1})
    assert not any(f.exists() for f in stale) and all(f.exists() for f in other)
    stale[0].write_bytes(b"half written")
    ckpt.load(path, {"w": np.zeros(3)})
    assert not stale[0].exists() and all(f.exists() for f in other)


def test_a_failed_write_names_the_checkpoint_and_leaves_the_old_one(tmp_path, monkeypatch):
    import errno

    import jigcnn.atomic

    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save(path, {"w": np.zeros(3)}, {"epoch": 1})
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jigcnn.atomic.os, "fsync", full)
    with pytest.raises(ckpt.CheckpointWriteError, match=rf"could not write checkpoint {path}: No space left on device"):
        ckpt.save(path, {"w": np.ones(3)}, {"epoch": 2})
    assert issubclass(ckpt.CheckpointWriteError, OSError)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ckpt.stale_temps(path) == []
