"""experiments.leak_anatomy: the quick run on the stand-in, the manifest path, the 1-NN reference, determinism."""

import json
import os
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory):
    """A private cache for the tiny stand-in (n=24)."""
    old = os.environ.get("JIGCNN_CACHE")
    os.environ["JIGCNN_CACHE"] = str(tmp_path_factory.mktemp("jigcnn_cache"))
    yield
    if old is None:
        os.environ.pop("JIGCNN_CACHE", None)
    else:
        os.environ["JIGCNN_CACHE"] = old


def _check_cells(data):
    cells = data["cells"]
    assert {c["protocol"] for c in cells} == {"paper", "grouped"}
    assert len({c["kind"] for c in cells}) == 2  # a regression and a classification
    for c in cells:
        for key in ("test", "baseline_test", "nn1_test", "nn1_same_source", "augmentation", "net", "training"):
            assert key in c, key
        assert c["baseline_test"] is not None and c["nn1_test"] is not None
        if c["protocol"] == "grouped":  # no source on both sides, so 1-NN never finds a sibling copy
            assert c["sources_in_train_and_test"] == 0 and c["nn1_same_source"] == 0.0
        else:
            assert c["sources_in_train_and_test"] > 0
    for split in data["splits"]:
        assert (split["sources_in_train_and_test"] == 0) == (split["protocol"] == "grouped")
    for task, e in data["answer"].items():
        assert e["closest_paper_cell"]["id"] in {c["id"] for c in cells}
    for name, lev in data["config"]["augmentation_levels"].items():
        assert lev["operations"], name


def test_quick_run_on_the_stand_in(tmp_path, synth_cache):
    from experiments import leak_anatomy, report

    out = tmp_path / "results" / "leak_anatomy"
    res = leak_anatomy.run(out=out, quick=True, verbose=False)
    data = json.loads((out / "results.json").read_text())
    assert data["experiment"] == "leak_anatomy" and data["real_data"] is False and data["config"]["quick"]
    assert "command" in data and data["environment"]["load_average_1_5_15"] is not None
    _check_cells(data)
    assert {c["net"] for c in data["cells"]} >= {"fig5_4", "deep4"}
    assert {c["training"] for c in data["cells"]} == {"paper", "converge"}
    assert data["plots"] == ["leak_anatomy.png"] and (out / "leak_anatomy.png").stat().st_size > 1000
    assert "1-NN" in leak_anatomy.summary(res)
    text = report.run(results_dir=tmp_path / "results", out=tmp_path / "results.md")
    assert "leak_anatomy" in text and "1-NN" in text


def _manifest(folder: pathlib.Path) -> pathlib.Path:
    """12 groups x 2 images: each group a random blob picture, a numeric 'age' and a categorical 'kind'."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["file,group,age,kind"]
    for g in range(12):
        base = rng.uniform(0.6, 1.0, (58, 36))
        base[rng.integers(0, 50):, rng.integers(0, 30):][:8, :6] = 0.1
        for c in range(2):
            img = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
            name = f"g{g}_{c}.png"
            Image.fromarray((img * 255).astype(np.uint8), mode="L").save(folder / name)
            rows.append(f"{name},child{g},{40.0 + 3 * g + 0.5 * c},{'ab'[g % 2]}")
    csv = folder / "manifest.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def test_manifest_folder_one_point_keeps_groups_on_one_side(tmp_path):
    """The default run: the centre point only, on a manifest folder (determinism: the slow test below)."""
    from experiments import leak_anatomy

    folder = tmp_path / "imgs"
    folder.mkdir()
    csv = _manifest(folder)
    point = [p for p in leak_anatomy.design(True) if p["role"] == "centre"]
    leak_anatomy.run(out=tmp_path / "out0", quick=True, manifest=str(csv), target="age,kind", points=point,
                     verbose=False)
    data = json.loads((tmp_path / "out0" / "results.json").read_text())
    assert data["real_data"] is True and "manifest" in data["data"] and data["tasks"] == ["age", "kind"]
    for c in data["cells"]:
        if c["protocol"] == "grouped":
            assert c["sources_in_train_and_test"] == 0 and c["nn1_same_source"] == 0.0
    assert {c["protocol"] for c in data["cells"]} == {"paper", "grouped"}
    assert all(c["sources_in_train_and_test"] > 0 for c in data["cells"] if c["protocol"] == "paper")


@pytest.mark.slow
def test_manifest_folder_keeps_groups_on_one_side_and_is_deterministic(tmp_path):
    from experiments import leak_anatomy

    folder = tmp_path / "imgs"
    folder.mkdir()
    csv = _manifest(folder)
    out = tmp_path / "out"
    assert leak_anatomy.main(["--quick", "--manifest", str(csv), "--target", "age,kind", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["real_data"] is True and "manifest" in data["data"]
    assert data["tasks"] == ["age", "kind"]
    _check_cells(data)
    assert (out / "leak_anatomy.png").is_file()
    # same seed, same numbers (one design point, run again)
    point = [p for p in data["config"]["points"] if p["role"] == "centre"]
    again = leak_anatomy.run(out=tmp_path / "again", quick=True, manifest=str(csv), target="age,kind",
                             points=point, verbose=False)
    first = {(c["task"], c["protocol"], c["id"]): (c["test"], c["nn1_test"], c["baseline_test"])
             for c in data["cells"]}
    for c in again["cells"]:
        assert first[(c["task"], c["protocol"], c["id"])] == (c["test"], c["nn1_test"], c["baseline_test"])


def test_manifest_needs_a_target(tmp_path):
    from experiments import leak_anatomy

    folder = tmp_path / "imgs"
    folder.mkdir()
    with pytest.raises(ValueError, match="--target"):
        leak_anatomy.run(out=tmp_path / "o", quick=True, manifest=str(_manifest(folder)), verbose=False)


def test_nearest_neighbour_and_references():
    from experiments.leak_anatomy import baseline, nearest_neighbour, score

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 4, 3, 1)), rng.normal(size=(9, 4, 3, 1))
    d = ((b.reshape(9, 1, -1) - a.reshape(1, 50, -1)) ** 2).sum(-1)
    assert np.array_equal(nearest_neighbour(a, b, chunk=4), d.argmin(1))
    assert np.array_equal(nearest_neighbour(a, a[[3, 7, 7]]), [3, 7, 7])  # an exact copy is its own neighbour
    assert score("regression", [11.0, 18.0], [10.0, 20.0]) == pytest.approx(10.0)
    assert baseline("classification", np.array([2, 2, 1]), np.array([2, 1, 1, 2])) == 0.5
    assert baseline("regression", np.array([10.0, 30.0]), np.array([20.0, 40.0])) == pytest.approx(25.0)


def test_default_output_folder_only_for_the_full_stand_in_run():
    from experiments import common, leak_anatomy

    assert leak_anatomy.default_out() == common.RESULTS_ROOT / "leak_anatomy"
    assert common.RESULTS_ROOT not in leak_anatomy.default_out(quick=True).parents
    assert common.RESULTS_ROOT not in leak_anatomy.default_out(manifest="x.csv").parents
