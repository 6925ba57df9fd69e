"""Issue 17, data side: no silent wrong answer, errors that name the file / line / value before the work starts.

Manifest column types, every Pillow image mode, dangling links and duplicates, corrupt caches,
decompression bombs, and the synthetic-set writer refusing to mix two sets.
"""

import io
import os
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from jigcnn.data import benchmarks as bench_mod
from jigcnn.data import images as images_mod
from jigcnn.data.images import CACHE_DIRNAME, DataError, load_folder, load_manifest, read_image
from jigcnn.data.synth import SET_RECORD, generate, main

# ---------------------------------------------------------------- manifest column types


def _manifest(d, scores, extra_col=None):
    """A manifest of tiny grey PNGs, one row per score (row i on line i + 2)."""
    d.mkdir(parents=True, exist_ok=True)
    lines = ["file,score" + (",kind" if extra_col else "")]
    for i, v in enumerate(scores):
        Image.new("L", (4, 4), 10 * i).save(d / f"{i}.png")
        lines.append(f"{i}.png,{v}" + (f",{extra_col[i]}" if extra_col else ""))
    (d / "m.csv").write_text("\n".join(lines) + "\n")
    return d / "m.csv"


@pytest.fixture
def no_decode(monkeypatch):
    """Fail the test if an image is decoded (the error must come first)."""

    def refuse(*a, **k):
        raise AssertionError("an image was decoded before the manifest error was raised")

    monkeypatch.setattr(images_mod, "read_image", refuse)


@pytest.mark.parametrize(
    "bad,why",
    [
        ("abc", "must be a number, got 'abc'"),
        ("nan", "must be a finite number, got 'nan'"),
        ("inf", "must be a finite number, got 'inf'"),
        ("-Infinity", "must be a finite number, got '-Infinity'"),
        ('"1,5"', "must be a number, got '1,5' \\(write numbers with a '.' decimal point"),
        ("1e999", "must be a finite number, got '1e999' \\(overflows"),
        ("1_000", "must be a number, got '1_000'"),
    ],
)
def test_one_bad_cell_keeps_the_column_numeric_and_names_line_and_value(tmp_path, bad, why, no_decode):
    scores = ["0.5", "1", "2.25", bad, "4", "5.5"]
    m = _manifest(tmp_path / "m", scores)
    with pytest.raises(DataError, match=rf"m\.csv line 5 \(3\.png\): column 'score' {why}.*5 of its 6 values are numbers"):
        load_manifest(m, size=(2, 2), cache=False)


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", '"1,5"', ""])
def test_skip_leaves_out_bad_numeric_rows_and_the_column_stays_numeric(tmp_path, bad):
    m = _manifest(tmp_path / "m", ["0.5", "1", "2.25", bad, "4", "5.5"])
    s = load_manifest(m, size=(2, 2), cache=False, on_error="skip")
    assert s.labels["score"].dtype == np.float64
    assert s.labels["score"].tolist() == [0.5, 1.0, 2.25, 4.0, 5.5]
    assert s.files == ("0.png", "1.png", "2.png", "4.png", "5.png")
    ((file, reason),) = s.skipped
    assert file == "3.png" and "line 5" in reason and "'score'" in reason


def test_int_or_float_is_decided_from_the_values_that_parse(tmp_path):
    s = load_manifest(_manifest(tmp_path / "m", ["1", "2", "x", "3"]), size=(2, 2), cache=False, on_error="skip")
    assert s.labels["score"].dtype == np.int64 and s.labels["score"].tolist() == [1, 2, 3]


def test_every_bad_cell_is_reported_in_one_error(tmp_path, no_decode):
    m = _manifest(tmp_path / "m", ["1", "abc", "3", "nan", "5", "6"])
    with pytest.raises(DataError) as e:
        load_manifest(m, size=(2, 2), cache=False)
    msg = str(e.value)
    assert "line 3 (1.png): column 'score' must be a number, got 'abc'" in msg
    assert "1 more bad row(s)" in msg and "line 5 (3.png): column 'score' must be a finite number, got 'nan'" in msg


def test_declared_types_override_inference(tmp_path):
    m = _manifest(tmp_path / "m", ["1", "2", "abc", "4"], extra_col=["a", "b", "7", "c"])
    s = load_manifest(m, size=(2, 2), cache=False, categorical=["score"])
    assert s.labels["score"].tolist() == ["1", "2", "abc", "4"]  # declared categorical: strings, as written
    assert s.labels["kind"].tolist() == ["a", "b", "7", "c"]  # mostly words: inferred categorical
    with pytest.raises(DataError, match=r"line 2 \(0\.png\): column 'kind' must be a number, got 'a' \(declared numeric"):
        load_manifest(m, size=(2, 2), cache=False, categorical=["score"], numeric=["kind"])
    with pytest.raises(ValueError, match="take a list of column names"):
        load_manifest(m, categorical="score")


def test_a_column_of_decimal_commas_is_an_error_not_strings(tmp_path):
    m = _manifest(tmp_path / "m", ['"1,5"', '"2,5"', '"3,0"'])
    with pytest.raises(DataError, match=r"line 2 \(0\.png\): column 'score' must be a number, got '1,5'"):
        load_manifest(m, size=(2, 2), cache=False)


def test_multiline_cell_line_numbers_are_where_the_record_starts(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for i in range(3):
        Image.new("L", (4, 4)).save(d / f"{i}.png")
    (d / "m.csv").write_text('file,note,score\n0.png,"two\nlines",1\n1.png,x,abc\n2.png,y,3\n')
    with pytest.raises(DataError, match=r"m\.csv line 4 \(1\.png\): column 'score' must be a number"):
        load_manifest(d / "m.csv", size=(2, 2), cache=False)


# ---------------------------------------------------------------- duplicates


def test_duplicate_manifest_rows_are_refused_naming_both_lines(tmp_path):
    m = _manifest(tmp_path / "m", ["1", "2", "3"])
    base = m.read_text()
    m.write_text(base + "1.png,2\n")
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=r"m\.csv lines 3 and 5 both list '1\.png' \(the same file\);"):
            load_manifest(m, size=(2, 2), cache=False, on_error=on_error)
    m.write_text(base + "./1.png,9\n")  # another spelling of the same file, another label
    with pytest.raises(DataError, match=r"lines 3 and 5 both list '1\.png' and '\./1\.png' \(the same file\), with different 'score'"):
        load_manifest(m, size=(2, 2), cache=False)


def test_link_to_another_drawing_in_a_folder_is_refused(drawing_folder):
    first = sorted(os.listdir(drawing_folder))[0]
    os.symlink(first, drawing_folder / "p2-9s-6.1f.jpeg")
    with pytest.raises(DataError, match=rf"{first} and p2-9s-6\.1f\.jpeg are the same file"):
        load_folder(drawing_folder, cache=False)


# ---------------------------------------------------------------- a folder's dangling links


@pytest.fixture
def drawing_folder(tmp_path):
    """Three small grey JPEGs named in the paper's convention."""
    d = tmp_path / "set"
    d.mkdir()
    for i, name in enumerate(["nu-1s-4.5m.jpeg", "p1-2w-5.6f.jpeg", "p2-3m-6.7m.jpeg"]):
        Image.new("L", (12, 16), 60 + 60 * i).save(d / name, format="JPEG")
    return d


def test_dangling_link_in_a_folder_is_an_error_or_skipped_never_dropped(drawing_folder, monkeypatch):
    os.symlink("gone.jpeg", drawing_folder / "p3-4b-7.0f.jpeg")
    s = load_folder(drawing_folder, size=(4, 3), cache=False, on_error="skip")
    assert len(s) == 3
    ((file, reason),) = s.skipped
    assert file == "p3-4b-7.0f.jpeg" and "dangling symbolic link" in reason and "gone.jpeg" in reason
    monkeypatch.setattr(images_mod, "read_image", lambda *a, **k: pytest.fail("decoded before the error"))
    with pytest.raises(DataError, match=r"p3-4b-7\.0f\.jpeg: dangling symbolic link \(its target 'gone\.jpeg'"):
        load_folder(drawing_folder, cache=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_special_file_in_a_folder_is_reported(drawing_folder):
    os.mkfifo(drawing_folder / "p3-5b-7.1f.jpeg")
    with pytest.raises(DataError, match=r"p3-5b-7\.1f\.jpeg: not a regular file"):
        load_folder(drawing_folder, cache=False)
    for cache in (False, True):  # hashing for the cache never opens the pipe (it would block)
        s = load_folder(drawing_folder, size=(4, 3), cache=cache, on_error="skip")
        assert len(s) == 3 and s.skipped[0][0] == "p3-5b-7.1f.jpeg"
    m = drawing_folder / "m.csv"
    m.write_text("file,x\nnu-1s-4.5m.jpeg,1\np3-5b-7.1f.jpeg,2\n")
    with pytest.raises(DataError, match=r"p3-5b-7\.1f\.jpeg: not a regular file"):
        load_manifest(m)


def test_dangling_link_in_a_manifest_names_the_link(tmp_path):
    m = _manifest(tmp_path / "m", ["1", "2"])
    (tmp_path / "m" / "sub").mkdir()
    m.write_text(m.read_text() + "sub,3\n")
    with pytest.raises(DataError, match=r"sub: listed in m\.csv line 4 is a folder, not an image file"):
        load_manifest(m, size=(2, 2), cache=False)
    m.write_text(m.read_text().replace("sub,3\n", ""))
    (tmp_path / "m" / "1.png").unlink()
    os.symlink("nowhere.png", tmp_path / "m" / "1.png")
    with pytest.raises(DataError, match=r"1\.png: dangling symbolic link"):
        load_manifest(m, size=(2, 2), cache=False)


# ---------------------------------------------------------------- image modes

W, H = 6, 8  # images are made at this size and read at it, so the mean is exact (no resampling)
V1, V2 = 77, 200  # two grey levels: top half V1, bottom half V2


def _halves(a, b):
    """(H, W) array: top half a, bottom half b."""
    out = np.empty((H, W), dtype=np.asarray(a).dtype)
    out[: H // 2], out[H // 2 :] = a, b
    return out


def _rgb_like(mode, top, bottom):
    im = Image.new(mode, (W, H), top)
    im.paste(Image.new(mode, (W, H // 2), bottom), (0, H // 2))
    return im


def _palette(alpha):
    im = Image.fromarray(_halves(np.uint8(0), np.uint8(1)), mode="L").convert("P")
    im.putpalette([V1, V1, V1, V2, V2, V2] + [0] * 762)
    if alpha:
        im = im.convert("PA")
        im.putalpha(Image.fromarray(_halves(np.uint8(255), np.uint8(0))))
    return im


def _sixteen(mode, dtype, top, bottom):
    return Image.frombytes(mode, (W, H), _halves(np.uint16(top), np.uint16(bottom)).astype(dtype).tobytes())


G = (V1 / 255 + V2 / 255) / 2  # mean of the two grey halves
GW = (V1 / 255 + 1.0) / 2  # top V1 opaque, bottom transparent (white paper)
LAB_GREY = 1.055 * (((128 / 255 * 100 + 16) / 116) ** 3) ** (1 / 2.4) - 0.055  # sRGB of L* = 50.2

# (mode, image factory, format to save in or None for an in-memory image, true mean)
MODES = [
    ("1", lambda: Image.fromarray(_halves(True, False)), "PNG", 0.5),
    ("L", lambda: Image.fromarray(_halves(np.uint8(V1), np.uint8(V2))), "PNG", G),
    ("P", lambda: _palette(False), "PNG", G),
    ("PA", lambda: _palette(True), "TIFF", GW),
    ("LA", lambda: _rgb_like("LA", (V1, 255), (V2, 0)), "PNG", GW),
    ("La", lambda: _rgb_like("La", (V1, 255), (0, 0)), None, GW),
    ("RGB", lambda: _rgb_like("RGB", (V1,) * 3, (V2,) * 3), "PNG", G),
    ("RGBA", lambda: _rgb_like("RGBA", (V1,) * 3 + (255,), (9, 9, 9, 0)), "PNG", GW),
    ("RGBa", lambda: _rgb_like("RGBa", (V1,) * 3 + (255,), (0, 0, 0, 0)), None, GW),
    ("RGBX", lambda: _rgb_like("RGBX", (V1,) * 3 + (0,), (V2,) * 3 + (0,)), None, G),
    ("CMYK", lambda: _rgb_like("CMYK", (0, 0, 0, 255 - V1), (0, 0, 0, 255 - V2)), "TIFF", G),
    ("YCbCr", lambda: _rgb_like("YCbCr", (V1, 128, 128), (V2, 128, 128)), "TIFF", G),
    ("LAB", lambda: _rgb_like("LAB", (128, 128, 128), (255, 128, 128)), "TIFF", (LAB_GREY + 1.0) / 2),
    ("HSV", lambda: _rgb_like("HSV", (0, 0, V1), (170, 0, V2)), None, G),
    ("I;16", lambda: Image.fromarray(_halves(np.uint16(32768), np.uint16(13107))), "PNG", (32768 + 13107) / 2 / 65535),
    ("I;16B", lambda: _sixteen("I;16B", ">u2", 65535, 0), "TIFF", 0.5),
    ("I;16L", lambda: _sixteen("I;16L", "<u2", 6553, 0), None, 0.05),
    ("I;16N", lambda: _sixteen("I;16N", "=u2", 6553, 0), None, 0.05),
    ("F", lambda: Image.fromarray(_halves(np.float32(0.25), np.float32(0.75))), "TIFF", 0.5),
]


@pytest.mark.parametrize("mode,make,fmt,mean", MODES, ids=[m[0] for m in MODES])
def test_every_mode_is_scaled_to_0_1(tmp_path, mode, make, fmt, mean):
    im = make()
    assert im.mode == mode
    for color, c in (("L", 1), ("RGB", 3)):
        if fmt is None:
            got = images_mod._pixels(im, "mem", (H, W), color, "bilinear")
        else:
            path = tmp_path / f"img.{fmt.lower()}"
            im.save(path, format=fmt)
            with Image.open(path) as back:  # the file really holds this mode (I;16B reopens as I;16 from PNG)
                assert back.mode == mode
            got = read_image(path, (H, W), color)
        assert got.shape == (H, W, c) and got.dtype == np.float32
        assert 0.0 <= got.min() and got.max() <= 1.0
        assert abs(float(got.mean()) - mean) < 0.006, (mode, color, float(got.mean()), mean)


def test_16_bit_png_resized_keeps_its_mean(tmp_path):
    # The case: a 16-bit grey PNG of true mean 0.50 loaded as 0.999.
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    got = read_image(tmp_path / "ramp.png", (10, 8))
    assert abs(float(got.mean()) - 0.5) < 0.01
    assert got[:, 0].mean() < 0.1 and got[:, -1].mean() > 0.9  # dark left, light right


def test_16_bit_png_as_older_pillows_open_it():
    im = Image.fromarray(_halves(np.int32(65535), np.int32(0)), mode="I")
    im.format = "PNG"  # Pillow < 11 opens 16-bit grey PNGs as mode 'I'
    assert abs(images_mod._pixels(im, "x.png", (H, W), "L", "bilinear").mean() - 0.5) < 1e-6


def test_32_bit_int_and_out_of_range_float_images_are_refused_by_name(tmp_path):
    Image.fromarray(_halves(np.int32(1000), np.int32(0)), mode="I").save(tmp_path / "i32.tif")
    with pytest.raises(DataError, match=r"i32\.tif: 32-bit integer pixels \(Pillow mode 'I', TIFF file\)"):
        read_image(tmp_path / "i32.tif")
    Image.fromarray(_halves(np.float32(0.5), np.float32(2.0))).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: floating-point image \(Pillow mode 'F'\) with values 0\.5\.\.2;"):
        read_image(tmp_path / "f.tif")
    Image.fromarray(_halves(np.float32(0.5), np.float32(np.nan))).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match=r"nan\.tif: .*NaN or infinite"):
        read_image(tmp_path / "nan.tif")


# ---------------------------------------------------------------- decompression bombs


def test_decompression_bomb_names_the_file_and_is_skipped(drawing_folder, monkeypatch):
    victim = drawing_folder / "p1-2w-5.6f.jpeg"
    Image.new("L", (40, 40), 128).save(victim, format="JPEG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 1600 pixels > 2 x 300 > 192: refused like 20000x20000
    with pytest.raises(DataError, match=r"p1-2w-5\.6f\.jpeg: image too large, refused as a possible decompression bomb"):
        read_image(victim)
    with pytest.raises(DataError, match=r"p1-2w-5\.6f\.jpeg: image too large"):
        load_folder(drawing_folder, cache=False)
    s = load_folder(drawing_folder, size=(4, 3), cache=False, on_error="skip")
    assert s.files == ("nu-1s-4.5m.jpeg", "p2-3m-6.7m.jpeg")
    assert [f for f, _ in s.skipped] == ["p1-2w-5.6f.jpeg"] and "decompression bomb" in s.skipped[0][1]


# ---------------------------------------------------------------- corrupt caches


def _corruptions(path):
    good = path.read_bytes()
    yield "zero-byte", b""
    yield "truncated", good[: len(good) // 2]
    yield "garbage", b"PK\x03\x04" + bytes(range(256)) * 4
    buf = io.BytesIO()
    np.savez(buf, other=np.zeros(3))
    yield "members missing", buf.getvalue()


def test_corrupt_image_cache_is_rebuilt_with_a_warning(drawing_folder):
    first = load_folder(drawing_folder, size=(4, 3))
    (cache_file,) = (drawing_folder / CACHE_DIRNAME).glob("*.npz")
    for what, data in list(_corruptions(cache_file)):
        cache_file.write_bytes(data)
        with pytest.warns(UserWarning, match=rf"{cache_file.name}: unreadable cache file, rebuilding it"):
            again = load_folder(drawing_folder, size=(4, 3))
        np.testing.assert_array_equal(again.images, first.images, err_msg=what)
        assert again.files == first.files
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # rebuilt: the next load reads it without a warning
            load_folder(drawing_folder, size=(4, 3))


def test_corrupt_cifar_jpeg_cache_is_rebuilt_with_a_warning(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    with tarfile.open(data / "cifar10-jpeg.tar.gz", "w:gz") as tf:
        for cls in ("cat", "dog"):
            for k in range(2):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                info = tarfile.TarInfo(f"train/{cls}/{k:04d}.jpg")
                info.size = len(buf.getvalue())
                tf.addfile(info, io.BytesIO(buf.getvalue()))
    cache = tmp_path / "cache"
    x, y = bench_mod.load_cifar10(data, "train", source="jpeg", cache=cache)
    assert x.shape == (4, 32, 32, 3) and y.tolist() == [3, 3, 5, 5]
    (cache_file,) = cache.glob("*.npz")
    for what, bad in list(_corruptions(cache_file)):
        cache_file.write_bytes(bad)
        with pytest.warns(UserWarning, match=rf"{cache_file.name}: unreadable cache file, rebuilding it"):
            x2, y2 = bench_mod.load_cifar10(data, "train", source="jpeg", cache=cache)
        np.testing.assert_array_equal(x2, x, err_msg=what)
        np.testing.assert_array_equal(y2, y)


# ---------------------------------------------------------------- the synthetic set's writer


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["--out", str(out), "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {out}: output folder is not empty") and "--overwrite" in err
    assert os.listdir(out) == ["mine.txt"]
    (tmp_path / "afile").write_text("x")
    assert main(["--out", str(tmp_path / "afile"), "--n", "2"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_synth_overwrite_replaces_the_previous_set_and_keeps_other_files(tmp_path):
    out = tmp_path / "out"
    first = generate(out, n=3, seed=1)
    with pytest.raises(DataError, match="output folder is not empty"):
        generate(out, n=2, seed=2)
    assert sorted(f for f in os.listdir(out) if not f.startswith(".")) == sorted(first)  # nothing written
    (out / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match=r"also holds 1 file\(s\) not written by this set, e.g. 'notes\.txt'"):
        second = generate(out, n=2, seed=2, overwrite=True)
    assert sorted(f for f in os.listdir(out) if not f.startswith(".")) == sorted(second + ["notes.txt"])
    assert SET_RECORD in os.listdir(out)


@pytest.mark.slow  # a fresh interpreter imports JAX (seconds); main() is tested in-process above
def test_synth_command_line_user_error_is_one_line_without_traceback(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.jpeg").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "jigcnn.data.synth", "--out", str(out), "--n", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "output folder is not empty" in r.stderr


def test_data_errors_are_project_user_errors():
    from jigcnn.data.names import FileNameError, parse_name
    from jigcnn.errors import UserError

    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)
    with pytest.raises(UserError, match=r"x\.png: extension must be"):
        parse_name("x.png")
    assert issubclass(FileNameError, UserError)


def test_a_mode_without_a_rule_is_refused_by_name():
    import types

    fake = types.SimpleNamespace(mode="I;32BS", format="TIFF")  # no Pillow mode we know how to scale
    with pytest.raises(DataError, match=r"odd\.tif: unsupported image mode 'I;32BS' \(Pillow\); supported: 1, L, P"):
        images_mod._pixels(fake, "odd.tif", (H, W), "L", "bilinear")


def test_an_interrupted_synthetic_set_is_regenerated_in_place(tmp_path):
    from jigcnn.data.drawings import synthetic_folder

    folder = synthetic_folder(3, 4, tmp_path)
    names = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    (folder / ".complete").unlink()  # as if killed before the marker was written
    (folder / names[0]).unlink()
    again = synthetic_folder(3, 4, tmp_path)  # its own folder: replaced without asking
    assert again == folder and sorted(f for f in os.listdir(folder) if not f.startswith(".")) == names
