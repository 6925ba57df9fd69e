"""`python -m jigcnn.train`: checkpoints every epoch and --resume continues where a run stopped."""

import json

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


def test_a_checkpoint_from_another_config_is_refused(shared_data_dir, tmp_path):
    from jigcnn.train import CheckpointMismatch

    common = ["--net", "thesis_mlp", "--data", "digits", "--data-dir", str(shared_data_dir), "--epochs", "1",
              "--checkpoint-dir", str(tmp_path / "ck")]
    assert main(common) == 0
    with pytest.raises(CheckpointMismatch, match="lr"):
        main(common + ["--resume", "--lr", "0.01"])
