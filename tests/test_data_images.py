"""Folder and manifest loading on generated images and on deliberately broken files; the cache."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jigcnn.data import images as images_mod
from jigcnn.data.images import CACHE_DIRNAME, DataError, load_folder, load_manifest, read_image
from jigcnn.data.labels import labels_from_names
from jigcnn.data.synth import generate


def _drawing_names(folder):
    """The drawings in a folder (the synthetic writer also leaves a hidden record of its set)."""
    return sorted(f for f in os.listdir(folder) if not f.startswith("."))


@pytest.fixture(scope="module")
def drawings(tmp_path_factory):
    d = tmp_path_factory.mktemp("drawings")
    generate(d, n=8, seed=3)
    return d


@pytest.fixture
def folder(drawings, tmp_path):
    d = tmp_path / "set"
    shutil.copytree(drawings, d)
    return d


def test_load_folder_arrays_and_labels(folder):
    s = load_folder(folder, cache=False)
    files = _drawing_names(folder)
    assert s.files == tuple(files) and len(s) == 8
    assert s.images.shape == (8, 58, 36, 1) and s.images.dtype == np.float32
    assert 0.0 <= s.images.min() < 0.5 < s.images.max() <= 1.0  # ink and paper
    expected = labels_from_names(files)
    assert set(s.labels) == set(expected)
    for k in expected:
        np.testing.assert_array_equal(s.labels[k], expected[k])
    np.testing.assert_array_equal(s.source, np.arange(8))
    assert s.skipped == ()


def test_options_size_rgb_resample(folder):
    s = load_folder(folder, size=(29, 18), color="RGB", resample="lanczos", cache=False)
    assert s.images.shape == (8, 29, 18, 3) and s.images.dtype == np.float32
    one = read_image(folder / s.files[0], (29, 18), "RGB", "lanczos")
    np.testing.assert_array_equal(one, s.images[0])
    with pytest.raises(ValueError, match="color must be"):
        load_folder(folder, color="CMYK")
    with pytest.raises(ValueError, match="resample must be"):
        load_folder(folder, resample="cubic-ish")
    with pytest.raises(ValueError, match="size must be"):
        load_folder(folder, size=(58,))


def test_cache_is_used_and_keyed_by_content(folder, monkeypatch):
    first = load_folder(folder)
    cached = list((folder / CACHE_DIRNAME).glob("*.npz"))
    assert len(cached) == 1

    def no_decode(*a, **k):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(images_mod, "read_image", no_decode)
    second = load_folder(folder)
    np.testing.assert_array_equal(first.images, second.images)
    assert second.files == first.files
    for k in first.labels:
        np.testing.assert_array_equal(first.labels[k], second.labels[k])
    monkeypatch.undo()
    # Other options make another cache entry; changed content invalidates.
    load_folder(folder, size=(20, 10))
    assert len(list((folder / CACHE_DIRNAME).glob("*.npz"))) == 2
    Image.new("L", (600, 800), 0).save(folder / first.files[0], format="JPEG")
    third = load_folder(folder)
    assert third.images[0].max() < 0.1 and first.images[0].max() > 0.9
    np.testing.assert_array_equal(third.images[1:], first.images[1:])


def test_cache_false_and_explicit_cache_dir(folder, tmp_path):
    load_folder(folder, cache=False)
    assert not (folder / CACHE_DIRNAME).exists()
    cdir = tmp_path / "mycache"
    load_folder(folder, cache=cdir)
    assert len(list(cdir.glob("folder-*.npz"))) == 1 and not (folder / CACHE_DIRNAME).exists()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_jpeg_names_the_file(folder):
    victim = folder / _drawing_names(folder)[2]
    _truncate(victim)
    with pytest.raises(DataError, match=f"{victim.name}: unreadable or truncated image"):
        load_folder(folder, cache=False)


def test_text_file_named_jpeg(folder):
    bad = folder / "p1-99s-5.5m.jpeg"
    bad.write_text("this is not a picture\n")
    with pytest.raises(DataError, match=r"p1-99s-5\.5m\.jpeg: not an image file"):
        load_folder(folder, cache=False)


def test_malformed_name_in_folder(folder):
    shutil.copy(folder / _drawing_names(folder)[0], folder / "p1-7s-5.13m.jpeg")
    with pytest.raises(DataError, match=r"p1-7s-5\.13m\.jpeg: months must be 0\.\.11, got 13"):
        load_folder(folder, cache=False)


def test_empty_folder_and_missing_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        load_folder(tmp_path / "nowhere")


def test_skip_lists_every_bad_file_with_its_reason(folder):
    victim = folder / _drawing_names(folder)[0]
    _truncate(victim)
    (folder / "p1-99s-5.5m.jpeg").write_text("text")
    (folder / "notes.txt").write_text("a note")
    s = load_folder(folder, on_error="skip", cache=False)
    assert len(s) == 7
    reasons = dict(s.skipped)
    assert set(reasons) == {victim.name, "p1-99s-5.5m.jpeg", "notes.txt"}
    assert "truncated" in reasons[victim.name]
    assert "not an image file" in reasons["p1-99s-5.5m.jpeg"]
    assert "extension must be" in reasons["notes.txt"]
    assert victim.name not in s.files and s.images.shape[0] == len(s.files) == len(s.labels["age"])


def test_read_image_alpha_becomes_white_paper(tmp_path):
    Image.new("RGBA", (10, 20), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    np.testing.assert_array_equal(read_image(tmp_path / "clear.png", (5, 4)), np.ones((5, 4, 1), np.float32))
    with pytest.raises(DataError, match="cannot read file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")


# ---------------------------------------------------------------- manifest


@pytest.fixture
def manifest(tmp_path):
    d = tmp_path / "m"
    (d / "img").mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.new("L", (40, 30), 40 * i).save(d / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{['cat', 'dog'][i % 2]},{i * 1.5},{i},child{i // 2}")
    (d / "labels.csv").write_text("file,animal,score,count,group\n" + "\n".join(rows) + "\n")
    return d / "labels.csv"


def test_manifest_labels_types_and_groups(manifest):
    s = load_manifest(manifest, size=(6, 8), cache=False)
    assert s.images.shape == (6, 6, 8, 1)
    np.testing.assert_allclose(s.images[:, 0, 0, 0], [40 * i / 255 for i in range(6)], atol=1e-6)
    assert s.labels["animal"].tolist() == ["cat", "dog"] * 3
    assert s.labels["score"].dtype == np.float64 and s.labels["score"].tolist() == [0, 1.5, 3, 4.5, 6, 7.5]
    assert s.labels["count"].dtype == np.int64
    assert "group" not in s.labels and "file" not in s.labels
    np.testing.assert_array_equal(s.source, [0, 0, 1, 1, 2, 2])
    assert s.group_names == ("child0", "child1", "child2")
    s2 = load_manifest(manifest, size=(6, 8), categorical=["count"], cache=False)
    assert s2.labels["count"].tolist() == [str(i) for i in range(6)]


def test_manifest_without_group_each_row_its_own_source(tmp_path):
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("file,label\na.png,x\nb.png,y\n")
    s = load_manifest(tmp_path / "m.csv", size=(4, 4), color="RGB", cache=False)
    np.testing.assert_array_equal(s.source, [0, 1])
    np.testing.assert_allclose(s.images[0, 0, 0], [1, 0, 0])
    np.testing.assert_allclose(s.images[1, 0, 0], [0, 0, 1])


def test_manifest_missing_file(manifest):
    (manifest.parent / "img" / "3.png").unlink()
    with pytest.raises(DataError, match=r"3\.png: file listed in labels\.csv line 5 does not exist"):
        load_manifest(manifest, cache=False)
    s = load_manifest(manifest, on_error="skip", cache=False)
    assert len(s) == 5 and s.skipped[0][0] == "img/3.png" and "does not exist" in s.skipped[0][1]


def test_manifest_bad_labels(manifest):
    text = manifest.read_text().replace("img/2.png,cat,3.0", "img/2.png,cat,three")
    manifest.write_text(text)
    # 5 of 6 values are numbers: the column is numeric and the bad cell an error naming line and value,
    # declared or not; declared categorical, every value is a string.
    for kw in ({}, {"numeric": ["score"]}):
        with pytest.raises(DataError, match=r"line 4 \(img/2\.png\): column 'score' must be a number, got 'three'"):
            load_manifest(manifest, cache=False, **kw)
    assert load_manifest(manifest, categorical=["score"], cache=False).labels["score"][2] == "three"
    manifest.write_text(text.replace("img/4.png,cat", "img/4.png,"))
    with pytest.raises(DataError, match=r"img/4\.png\): empty label in column 'animal'"):
        load_manifest(manifest, cache=False)


@pytest.mark.parametrize(
    "content,message",
    [
        ("", "empty manifest"),
        ("name,label\na.png,1\n", "header must have a 'file' column"),
        ("file,label\n", "header but no rows"),
        ("file,label\na.png,1,2\n", "line 2: expected 2 fields, got 3"),
        ("file,label,label\na.png,1,2\n", "duplicate"),
    ],
)
def test_manifest_structure_errors(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        load_manifest(tmp_path / "m.csv", cache=False)


def test_manifest_argument_errors(manifest):
    with pytest.raises(ValueError, match="not among the manifest's label columns"):
        load_manifest(manifest, numeric=["weight"])
    with pytest.raises(ValueError, match="both numeric and categorical"):
        load_manifest(manifest, numeric=["count"], categorical=["count"])


def test_manifest_cache_and_name_labels(drawings, tmp_path):
    d = tmp_path / "named"
    shutil.copytree(drawings, d)
    files = _drawing_names(d)
    (d / "list.csv").write_text("file,quality\n" + "".join(f"{f},{i % 3}\n" for i, f in enumerate(files)))
    s = load_manifest(d / "list.csv", name_labels=True)
    assert (d / CACHE_DIRNAME).is_dir()
    assert s.labels["age"].tolist() == labels_from_names(files)["age"].tolist()
    again = load_manifest(d / "list.csv", name_labels=True)
    np.testing.assert_array_equal(again.images, s.images)
    np.testing.assert_array_equal(again.labels["quality"], s.labels["quality"])
