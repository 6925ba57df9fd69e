"""`python -m jigcnn.train`: checkpoints every epoch and --resume continues where a run stopped."""

import json

import numpy as np
import pytest

from jigcnn.train.cli import main


def test_resume_continues_and_equals_an_uninterrupted_run(shared_data_dir, tmp_path):
    common = ["--net", "thesis_mlp", "--data", "digits", "--data-dir", str(shared_data_dir), "--seed", "3"]
    assert main(common + ["--epochs", "3", "--out", str(tmp_path / "straight.json")]) == 0
    ck = str(tmp_path / "ck")
    assert main(common + ["--epochs", "1", "--checkpoint-dir", ck]) == 0
    assert main(common + ["--epochs", "3", "--checkpoint-dir", ck, "--resume", "--out", str(tmp_path / "resumed.json")]) == 0
    straight = json.loads((tmp_path / "straight.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["history"]["epoch"] == [1, 2, 3]
    assert resumed["history"]["test_accuracy"] == straight["history"]["test_accuracy"]
    assert resumed["metrics"] == straight["metrics"]


def test_resume_needs_a_checkpoint_dir(capsys):
    assert main(["--resume"]) == 2
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err


def test_a_checkpoint_from_another_config_is_refused(shared_data_dir, tmp_path, capsys):
    common = ["--net", "thesis_mlp", "--data", "digits", "--data-dir", str(shared_data_dir), "--epochs", "1",
              "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(common) == 0
    capsys.readouterr()
    assert main(common + ["--resume", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m jigcnn.train: error: refusing checkpoint ") and "config 'lr'" in err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------- refusals before the data is loaded


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the command line gets as far as loading the data."""
    import jigcnn.train.cli as cli

    def boom(*a, **k):
        raise AssertionError("the data was loaded before the arguments were refused")

    monkeypatch.setattr(cli, "load_dataset", boom)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert err.startswith("python -m jigcnn.train: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.mark.parametrize("args,needle", [
    (["--epochs", "-3"], "--epochs must be >= 1, got -3"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--batch-size", "-5"], "--batch-size must be >= 1, got -5"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1.0"),
    (["--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--optimizer", "fast"], "--optimizer: unknown optimizer 'fast'"),
    (["--net", "ignet_fig5"], "--net ignet_fig5 needs its own settings"),
    (["--overwrite"], "--overwrite needs --checkpoint-dir"),
])
def test_numbers_and_names_that_make_no_sense_are_refused_first(no_data, capsys, args, needle):
    assert main(["--data", "digits"] + args) == 2
    _one_error_line(capsys, needle)


def _checkpoint_in(folder):
    from jigcnn.train import checkpoint as ckpt

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ckpt.CHECKPOINT_NAME
    ckpt.save(path, {"w": np.arange(3.0)}, {"epoch": 7})
    return path


def test_a_folder_holding_a_checkpoint_is_refused_without_resume(no_data, capsys, tmp_path):
    path = _checkpoint_in(tmp_path / "ck")
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in (tmp_path / "ck").iterdir()}
    for net in ("thesis_mlp", "lenet5"):  # the same net or another one
        assert main(["--net", net, "--data", "digits", "--checkpoint-dir", str(tmp_path / "ck")]) == 2
        _one_error_line(capsys, f"--checkpoint-dir {tmp_path / 'ck'} already holds a checkpoint ({path}, epoch 7)",
                        "--resume", "--overwrite")
    after = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in (tmp_path / "ck").iterdir()}
    assert after == before


def test_resume_where_there_is_no_checkpoint_is_refused(no_data, capsys, tmp_path):
    assert main(["--data", "digits", "--checkpoint-dir", str(tmp_path / "misspelt"), "--resume"]) == 2
    _one_error_line(capsys, f"--checkpoint-dir {tmp_path / 'misspelt'} does not exist; nothing to resume")
    assert not (tmp_path / "misspelt").exists()
    (tmp_path / "empty").mkdir()
    assert main(["--data", "digits", "--checkpoint-dir", str(tmp_path / "empty"), "--resume"]) == 2
    _one_error_line(capsys, f"holds no checkpoint ({tmp_path / 'empty' / 'checkpoint.npz'})")
    _checkpoint_in(tmp_path / "ck")
    assert main(["--data", "digits", "--checkpoint-dir", str(tmp_path / "ck"), "--resume", "--overwrite"]) == 2
    _one_error_line(capsys, "--resume and --overwrite contradict each other")


def test_resume_from_a_truncated_checkpoint_names_it(no_data, capsys, tmp_path):
    path = _checkpoint_in(tmp_path / "ck")
    path.write_bytes(path.read_bytes()[:100])
    assert main(["--data", "digits", "--checkpoint-dir", str(tmp_path / "ck"), "--resume"]) == 2
    _one_error_line(capsys, f"checkpoint {path} is unreadable")


def test_unwritable_output_paths_are_refused_before_training(no_data, capsys, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    assert main(["--data", "digits", "--out", str(tmp_path / "file" / "r.json")]) == 2
    _one_error_line(capsys, f"--out {tmp_path / 'file' / 'r.json'}: its folder {tmp_path / 'file'} is a file")
    assert main(["--data", "digits", "--out", str(tmp_path)]) == 2
    _one_error_line(capsys, f"--out {tmp_path} is a folder, not a file")
    assert main(["--data", "digits", "--checkpoint-dir", str(tmp_path / "file" / "ck")]) == 2
    _one_error_line(capsys, f"--checkpoint-dir {tmp_path / 'file' / 'ck'} cannot be created")


def test_as_a_program_a_user_error_is_one_line_and_a_non_zero_exit():
    import os
    import pathlib
    import subprocess
    import sys

    src = pathlib.Path(__file__).resolve().parent.parent / "src"
    env = dict(os.environ, PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "jigcnn.train", "--epochs", "-3", "--data-dir", "/nonexistent"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "python -m jigcnn.train: error: --epochs must be >= 1, got -3\n"


def test_a_bug_keeps_its_traceback_and_divergence_exits_1(monkeypatch, capsys):
    import jigcnn.train.cli as cli
    from jigcnn.train import DivergenceError

    def bug(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--data", "digits"])

    def diverge(args):
        raise DivergenceError("training diverged at epoch 3, step 1 (0-based within the epoch): the loss is non-finite")

    monkeypatch.setattr(cli, "run", diverge)
    assert main(["--data", "digits"]) == 1
    _one_error_line(capsys, "training diverged at epoch 3, step 1")


# ---------------------------------------------------------------- with data


def test_a_batch_larger_than_the_training_set_is_refused(shared_data_dir, capsys, tmp_path):
    args = ["--net", "thesis_mlp", "--data", "digits", "--data-dir", str(shared_data_dir), "--epochs", "1"]
    assert main(args + ["--batch-size", "5000", "--checkpoint-dir", str(tmp_path / "ck")]) == 2
    _one_error_line(capsys, "fit: batch_size 5000 is larger than the 1437 training samples")
    assert not (tmp_path / "ck").exists()


def test_overwrite_replaces_a_checkpoint(shared_data_dir, capsys, tmp_path):
    from jigcnn.train import checkpoint as ckpt

    path = _checkpoint_in(tmp_path / "ck")
    args = ["--net", "thesis_mlp", "--data", "digits", "--data-dir", str(shared_data_dir), "--epochs", "1"]
    assert main(args + ["--checkpoint-dir", str(tmp_path / "ck"), "--overwrite"]) == 0
    header = ckpt.read_header(path)
    assert header["meta"]["epoch"] == 1 and header["description"]["config"]["net"] == "thesis_mlp"
