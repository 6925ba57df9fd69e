"""experiments.bench_versions: row parsing, refusing a tree without jigcnn, and a tiny real comparison (slow)."""

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import bench_versions as bv  # noqa: E402


def test_rows_parse_and_bad_rows_are_named():
    assert bv.parse_rows("all") == list(bv.ROWS)
    assert bv.parse_rows("lenet5:256:sgd,vgg_small:128:nesterov") == [("lenet5", 256, "sgd"),
                                                                        ("vgg_small", 128, "nesterov")]
    for bad in ("lenet5:0:sgd", "lenet5:256", "lenet5:x:sgd", "lenet5:32:rmsprop"):
        with pytest.raises(SystemExit, match="--rows item"):
            bv.parse_rows(bad)


def test_a_tree_without_jigcnn_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bv.main(["--base", str(tmp_path)])
    assert "no src/jigcnn/__init__.py" in capsys.readouterr().err


@pytest.mark.slow
def test_this_tree_against_itself(tmp_path):
    recs = bv.compare(ROOT, ROOT, [("lenet5", 32, "sgd")], ("autodiff",), repeats=2, seconds=0.05, rounds=2)
    (r,) = recs
    assert len(r["samples"]["base"]) == len(r["samples"]["head"]) == 4
    assert r["base_sps"] > 0 and r["head_sps"] > 0 and 0.2 < r["head_over_base"] < 5
