"""Load a folder of drawings (labels from file names) or any labelled image folder (CSV manifest).

Images come back as ``(N, H, W, C)`` float32 in [0, 1]. The default size is the paper's
36x58 contraction taken as **H=58, W=36** (the drawings are portrait, about 600 wide by 800
tall), grayscale (C=1). Results are cached as ``.npz`` keyed by the files' content and the
options, so a second load is fast.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
import warnings
import zipfile
import zlib
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jigcnn.atomic import atomic_path
from jigcnn.errors import UserError
from jigcnn.data.labels import labels_from_names
from jigcnn.data.names import DEFAULT_WHO_TABLE, WhoIsDrawn, parse_name

DEFAULT_SIZE = (58, 36)  # (height, width): the paper's 36x58, portrait
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
CACHE_DIRNAME = ".jigcnn_cache"
_CACHE_VERSION = 2  # 2: 16-bit images scaled by 65535, manifest column types from the values that parse


class DataError(UserError):
    """Bad input data; the message names the file (or argument) and what is wrong (a ValueError)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
    """Images (N, H, W, C) float32 in [0, 1], label arrays, a source id per image, file names, skipped files."""

    images: np.ndarray
    labels: dict[str, np.ndarray]
    source: np.ndarray  # (N,) int32: images with one source stay on one side of a grouped split
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) for each file skipped with on_error="skip"
    group_names: tuple[str, ...] = ()  # manifest `group` value of each source id, when a group column exists

    def __len__(self) -> int:
        return len(self.files)


def _check_options(size, color, resample, on_error):
    if len(tuple(size)) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (height, width) positive integers, got {size!r}")
    if color not in ("L", "RGB"):
        raise ValueError(f"color must be 'L' (grayscale) or 'RGB', got {color!r}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def read_image(path: str | os.PathLike, size=DEFAULT_SIZE, color: str = "L", resample: str = "bilinear") -> np.ndarray:
    """Read one image file and contract it to (H, W, C) float32 in [0, 1]; DataError names the file."""
    _check_options(size, color, resample, "raise")
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from None
    return _decode(path, data, size, color, resample)


def _decode(path, data, size, color, resample) -> np.ndarray:
    if not data:
        raise DataError(f"{path}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # raises on a truncated or corrupt stream
                return _pixels(im, path, size, color, resample)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise DataError(
            f"{path}: image too large, refused as a possible decompression bomb ({e}); if the file is trusted, "
            "raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({e})") from None


# Pillow modes with 8 bits per channel: converted by Pillow (alpha over white paper first).
_EIGHT_BIT_MODES = ("1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # unsigned 16-bit grey: white is 65535


def _pixels(im: Image.Image, path, size, color, resample) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] from a loaded Pillow image of any supported mode; DataError names the file."""
    hw = (int(size[1]), int(size[0]))
    mode = im.mode
    if mode in _EIGHT_BIT_MODES:
        im = _flatten_alpha(im)
        if im.mode == "LAB":  # Pillow converts LAB to RGB only
            im = im.convert("RGB")
        arr = np.asarray(im.convert(color).resize(hw, RESAMPLE[resample]), dtype=np.float32) / 255.0
        return arr[..., None] if arr.ndim == 2 else arr
    grey = _wide_grey(im, path)  # (h, w) float32 in [0, 1]
    out = np.asarray(Image.fromarray(grey, mode="F").resize(hw, RESAMPLE[resample]), dtype=np.float32)
    out = np.clip(out, 0.0, 1.0)[..., None]  # lanczos/bicubic overshoot; the 8-bit path clips the same way
    return np.repeat(out, 3, axis=-1) if color == "RGB" else out


def _wide_grey(im: Image.Image, path) -> np.ndarray:
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(im).astype(np.float32) / 65535.0
    if mode == "I" and im.format == "PNG":  # a 16-bit grey PNG as older Pillows open it
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 16-bit PNG with values {a.min()}..{a.max()} outside 0..65535")
        return a.astype(np.float32) / 65535.0
    if mode == "I":
        raise DataError(
            f"{path}: 32-bit integer pixels (Pillow mode 'I', {im.format or 'unknown'} file) have no known white "
            "level; refused rather than guessed. Save the image with 8 or 16 bits per channel"
        )
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise DataError(f"{path}: floating-point image (Pillow mode 'F') holds NaN or infinite pixels")
        if a.size and (a.min() < 0.0 or a.max() > 1.0):
            raise DataError(
                f"{path}: floating-point image (Pillow mode 'F') with values {a.min():.6g}..{a.max():.6g}; "
                "only values already in [0, 1] are accepted (the white level of other ranges is unknown)"
            )
        return a
    raise DataError(f"{path}: unsupported image mode {mode!r} (Pillow); supported: "
                    f"{', '.join(_EIGHT_BIT_MODES + _SIXTEEN_BIT_MODES)}, 'F' in [0, 1], and 16-bit PNG as 'I'")


def _flatten_alpha(im: Image.Image) -> Image.Image:
    # Transparent areas become white paper rather than black.
    if im.mode == "La":  # premultiplied grey + alpha: over white is L' + (255 - a); Pillow cannot convert it
        a = np.asarray(im, dtype=np.int32)
        return Image.fromarray(np.clip(a[..., 0] + 255 - a[..., 1], 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "RGBa", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im


# ---------------------------------------------------------------- cache


def _cache_dir(cache, folder: pathlib.Path) -> pathlib.Path | None:
    if cache is False or cache is None:
        return None
    if cache is not True:
        return pathlib.Path(cache)
    if os.access(folder, os.W_OK):
        return folder / CACHE_DIRNAME
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jigcnn"


def _hash_files(paths: Sequence[pathlib.Path], names: Sequence[str], h) -> None:
    for p, n in zip(paths, names):
        h.update(n.encode() + b"\0")
        if not p.is_file():  # a dangling link or a pipe: never opened (a pipe would block)
            h.update(b"<not a file>\0")
            continue
        try:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"<missing>")
        h.update(b"\0")


# What a damaged .npz raises: zero-byte (EOFError, ValueError), truncated or garbled (BadZipFile, zlib.error,
# OSError), a member missing (KeyError).
CACHE_READ_ERRORS = (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def _cache_load(path: pathlib.Path) -> ImageSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = {k[6:]: z[k] for k in z.files if k.startswith("label:")}
            skipped = tuple((str(a), str(b)) for a, b in z["skipped"].reshape(-1, 2))
            s = ImageSet(
                z["images"], labels, z["source"], tuple(str(f) for f in z["files"]), skipped,
                tuple(str(g) for g in z["group_names"]),
            )
        n = len(s.files)
        if s.images.ndim != 4 or len(s.images) != n or len(s.source) != n or any(len(v) != n for v in labels.values()):
            raise ValueError("arrays of inconsistent lengths")
        return s
    except CACHE_READ_ERRORS as e:
        warnings.warn(f"{path}: unreadable cache file, rebuilding it ({type(e).__name__}: {e})", stacklevel=3)
        return None


def _cache_save(path: pathlib.Path, s: ImageSet) -> None:
    arrays = {
        "images": s.images,
        "source": s.source,
        "files": np.array(s.files, dtype=str),
        "skipped": np.array(s.skipped, dtype=str).reshape(-1, 2),
        "group_names": np.array(s.group_names, dtype=str),
    }
    arrays.update({f"label:{k}": v for k, v in s.labels.items()})
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, **arrays)
    except OSError as e:
        warnings.warn(f"{path}: could not write cache ({e})")


def _cached(kind, folder, paths, names, options, cache, build) -> ImageSet:
    cdir = _cache_dir(cache, folder)
    if cdir is None:
        return build()
    h = hashlib.sha256(json.dumps([_CACHE_VERSION, kind, options], sort_keys=True, default=str).encode())
    _hash_files(paths, names, h)
    path = cdir / f"{kind}-{h.hexdigest()[:24]}.npz"
    if path.exists():
        got = _cache_load(path)
        if got is not None:
            return got
    result = build()
    _cache_save(path, result)
    return result


# ---------------------------------------------------------------- folder of drawings


def _folder_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Every non-hidden entry that is not a folder: regular files, dangling links and special files (the
    last two are reported by :func:`_not_a_file`, never dropped)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir())
    if not files:
        raise DataError(f"{folder}: empty folder (no files to load)")
    return files


def _not_a_file(p: pathlib.Path) -> str | None:
    """Why ``p`` cannot be read as an image file (a dangling link, a special file), or None."""
    if p.is_symlink() and not p.exists():
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        return f"{p}: dangling symbolic link (its target {target!r} does not exist)"
    if not p.is_file():
        return f"{p}: not a regular file (a device, socket or pipe)"
    return None


def _same_file_key(p: pathlib.Path) -> str:
    return os.path.normcase(os.path.realpath(p))


def load_folder(
    folder: str | os.PathLike,
    *,
    size=DEFAULT_SIZE,
    color: str = "L",
    resample: str = "bilinear",
    who_table: Mapping[str, WhoIsDrawn] | None = None,
    cache=True,
    on_error: str = "raise",
) -> ImageSet:
    """Load a folder of drawings named in the paper's convention (every non-hidden file; labels from names).

    ``size`` is (H, W), default (58, 36); ``color`` 'L' or 'RGB'; ``cache`` True (default place),
    False, or a folder; ``on_error`` 'raise' or 'skip' (skipped files are listed in ``.skipped``).
    Each drawing is its own source (source id = its index). A dangling link or special file is an error
    (or skipped), never dropped; bad names and dangling links fail before any image is decoded; two
    names for one file are always refused.
    """
    _check_options(size, color, resample, on_error)
    folder = pathlib.Path(folder)
    paths = _folder_files(folder)
    names = [p.name for p in paths]
    table = dict(who_table or DEFAULT_WHO_TABLE)
    options = dict(size=list(size), color=color, resample=resample, on_error=on_error,
                   who={k: dataclasses.astuple(v) for k, v in table.items()})
    if on_error == "raise":  # what can be known without decoding fails before any image is decoded
        for p, n in zip(paths, names):
            bad = _not_a_file(p)
            if bad:
                raise DataError(bad)
            try:
                parse_name(n, table)
            except ValueError as e:
                msg = str(e)
                raise DataError(msg if msg.startswith((str(p), n)) else f"{p}: {msg}") from None
    _refuse_same_files(folder, paths, names)

    def build() -> ImageSet:
        imgs, kept, skipped = [], [], []
        for p, n in zip(paths, names):
            try:
                bad = _not_a_file(p)
                if bad:
                    raise DataError(bad)
                parse_name(n, table)
                imgs.append(read_image(p, size, color, resample))
                kept.append(n)
            except (DataError, ValueError) as e:
                msg = str(e)
                msg = msg if msg.startswith((str(p), n)) else f"{p}: {msg}"
                if on_error == "raise":
                    raise DataError(msg) from None
                skipped.append((n, msg))
        if not kept:
            raise DataError(f"{folder}: no loadable drawings ({len(skipped)} skipped: {skipped[:3]}...)")
        return ImageSet(
            np.stack(imgs).astype(np.float32), labels_from_names(kept, table),
            np.arange(len(kept), dtype=np.int32), tuple(kept), tuple(skipped),
        )

    return _cached("folder", folder, paths, names, options, cache, build)


def _refuse_same_files(folder, paths, names) -> None:
    # Two names for one file (a link to another drawing) would be two sources for one image.
    first = {}
    for p, n in zip(paths, names):
        if not p.exists():
            continue
        key = _same_file_key(p)
        if key in first:
            raise DataError(f"{folder}: {first[key]} and {n} are the same file ({key}); one image under two "
                            "names would fall on both sides of a split")
        first[key] = n


# ---------------------------------------------------------------- CSV manifest


_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")  # no '_', no hex, no nan/inf
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
_COMMA_NUMBER = re.compile(r"[+-]?\d[\d.]*(?:,\d+)+\Z")  # 1,5 (decimal comma) or 1,000 (thousands)
_INT64_MAX = 2**63 - 1


def _looks_numeric(v: str) -> bool:
    """A cell a person meant as a number: a plain number, nan/inf, or a number written with a comma."""
    return bool(_FLOAT.match(v) or _NON_FINITE.match(v) or _COMMA_NUMBER.match(v))


def _cell_number(c: str, v: str):
    """(int or float, None) for a finite number, else (None, what is wrong, naming the column and value)."""
    if _INT.match(v):
        n = int(v)
        if abs(n) > _INT64_MAX:
            return None, f"column {c!r} must be a number within int64, got {v!r}"
        return n, None
    if _FLOAT.match(v):
        x = float(v)
        if not math.isfinite(x):
            return None, f"column {c!r} must be a finite number, got {v!r} (overflows float64)"
        return x, None
    if _NON_FINITE.match(v):
        return None, f"column {c!r} must be a finite number, got {v!r}"
    if _COMMA_NUMBER.match(v):
        return None, f"column {c!r} must be a number, got {v!r} (write numbers with a '.' decimal point and no thousands separator)"
    return None, f"column {c!r} must be a number, got {v!r}"


def _read_manifest_rows(csv_path: pathlib.Path):
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read manifest ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path}: manifest is not UTF-8 text ({e})") from None
    reader = csv.reader(io.StringIO(text))
    rows, prev = [], 0
    try:
        for r in reader:  # the line a record starts on (a quoted cell may span lines)
            if any(c.strip() for c in r):
                rows.append((prev + 1, r))
            prev = reader.line_num
    except csv.Error as e:
        raise DataError(f"{csv_path} line {reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{csv_path}: empty manifest (no header row)")
    header = [c.strip() for c in rows[0][1]]
    if "file" not in header:
        raise DataError(f"{csv_path}: header must have a 'file' column, got {header}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup or "" in header:
        raise DataError(f"{csv_path}: header has duplicate or empty column names {dup or ['']}")
    body = []
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise DataError(f"{csv_path} line {line}: expected {len(header)} fields, got {len(r)}")
        body.append((line, dict(zip(header, (c.strip() for c in r)))))
    if not body:
        raise DataError(f"{csv_path}: manifest has a header but no rows")
    return header, body


def _column_types(body, label_cols, numeric, categorical) -> tuple[dict[str, bool], dict[str, str]]:
    """Numeric or not per column, and the reason (shown beside a bad cell)."""
    is_num, why = {}, {}
    for c in label_cols:
        if c in categorical:
            is_num[c], why[c] = False, "declared categorical"
        elif c in numeric:
            is_num[c], why[c] = True, f"declared numeric; pass categorical=[{c!r}] if it is categorical"
        else:
            vals = [row[c] for _, row in body if row[c] != ""]
            k = sum(_looks_numeric(v) for v in vals)  # numbers, nan/inf, numbers with a comma
            is_num[c] = k > 0 and 2 * k >= len(vals)  # at least half the cells are numbers: a numeric column
            ok = sum(_cell_number(c, v)[1] is None for v in vals)
            why[c] = (f"the column is numeric: {ok} of its {len(vals)} values are numbers; "
                      f"pass categorical=[{c!r}] if it is categorical")
    return is_num, why


def _check_manifest_rows(csv_path, body, paths, label_cols, is_num, why, name_labels, table):
    """Per row: the parsed label values, or what is wrong with the row (known without decoding an image)."""
    out = []
    for (line, row), p in zip(body, paths):
        where = f"{csv_path.name} line {line} ({row['file']})"
        problems, vals = [], {}
        if not row["file"]:
            problems.append("empty 'file' cell")
        for c in label_cols:
            v = row[c]
            if v == "":
                problems.append(f"empty label in column {c!r}")
            elif is_num[c]:
                x, bad = _cell_number(c, v)
                if bad:
                    problems.append(f"{bad} ({why[c]})")
                vals[c] = x
            else:
                vals[c] = v
        if "group" in row and row["group"] == "":
            problems.append("empty 'group' cell")
        if name_labels and row["file"]:
            try:
                parse_name(row["file"], table)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            out.append((row["file"], f"{where}: " + "; ".join(problems), None))
        elif not p.is_file():
            if p.is_dir():
                why_not = f"{p}: listed in {csv_path.name} line {line} is a folder, not an image file"
            elif p.exists() or p.is_symlink():
                why_not = _not_a_file(p)
            else:
                why_not = f"{p}: file listed in {csv_path.name} line {line} does not exist"
            out.append((row["file"], why_not, None))
        else:
            out.append((row["file"], None, vals))
    return out


def _refuse_duplicate_rows(csv_path, body, paths, label_cols) -> None:
    # One file listed twice would be two sources (and perhaps two labels) for one image.
    first = {}
    for (line, row), p in zip(body, paths):
        if not row["file"]:
            continue
        key = _same_file_key(p)
        if key in first:
            line0, row0 = first[key]
            names = repr(row0["file"]) + ("" if row0["file"] == row["file"] else f" and {row['file']!r}")
            differ = [c for c in label_cols + ["group"] if row0.get(c) != row.get(c)]
            labels = f", with different {', '.join(map(repr, differ))}" if differ else ""
            raise DataError(
                f"{csv_path.name} lines {line0} and {line} both list {names} (the same file){labels}; a manifest "
                "must list each image once (twice, it would be two sources, on both sides of a grouped split)"
            )
        first[key] = (line, row)


def load_manifest(
    csv_path: str | os.PathLike,
    *,
    size=DEFAULT_SIZE,
    color: str = "L",
    resample: str = "bilinear",
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    name_labels: bool = False,
    who_table: Mapping[str, WhoIsDrawn] | None = None,
    cache=True,
    on_error: str = "raise",
) -> ImageSet:
    """Load images listed in a CSV manifest: column ``file`` (relative to the CSV), label columns, optional ``group``.

    A column is numeric when it is named in ``numeric``, or, unless named in ``categorical``, when at
    least half of its non-empty cells look like numbers; in a numeric column every cell must then be a
    finite number (``abc``, ``nan``, ``inf``, ``1,5`` are errors naming the line and value). Every
    label-cell problem, missing file and duplicate row is found before any image is decoded.
    ``on_error="skip"`` leaves out (and lists in ``.skipped``) rows with bad cells or bad images; a file
    listed twice is always an error. ``group`` values become the source ids (all images of one group stay
    on one side of a split); without it each row is its own source. ``name_labels=True`` adds labels
    parsed from the file names.
    """
    _check_options(size, color, resample, on_error)
    if isinstance(numeric, str) or isinstance(categorical, str):
        raise ValueError(f"numeric= and categorical= take a list of column names, got {numeric!r}, {categorical!r}")
    csv_path = pathlib.Path(csv_path)
    header, body = _read_manifest_rows(csv_path)
    label_cols = [c for c in header if c not in ("file", "group")]
    for arg, cols in (("numeric", numeric), ("categorical", categorical)):
        bad = [c for c in cols if c not in label_cols]
        if bad:
            raise ValueError(f"{arg}={list(cols)}: column(s) {bad} not among the manifest's label columns {label_cols}")
    if set(numeric) & set(categorical):
        raise ValueError(f"columns {sorted(set(numeric) & set(categorical))} are both numeric and categorical")
    folder = csv_path.parent
    paths = [folder / row["file"] for _, row in body]
    names = [row["file"] for _, row in body]
    table = dict(who_table or DEFAULT_WHO_TABLE)
    _refuse_duplicate_rows(csv_path, body, paths, label_cols)
    is_num, why = _column_types(body, label_cols, set(numeric), set(categorical))
    checked = _check_manifest_rows(csv_path, body, paths, label_cols, is_num, why, name_labels, table)
    bad_rows = [msg for _, msg, vals in checked if vals is None]
    if bad_rows and on_error == "raise":
        more = ""
        if len(bad_rows) > 1:
            rest = bad_rows[1:6]
            more = f" [and {len(bad_rows) - 1} more bad row(s): " + " | ".join(rest) + (" | ..." if len(bad_rows) > 6 else "") + "]"
        raise DataError(bad_rows[0] + more)
    options = dict(size=list(size), color=color, resample=resample, on_error=on_error, numeric=sorted(numeric),
                   categorical=sorted(categorical), name_labels=name_labels,
                   who={k: dataclasses.astuple(v) for k, v in table.items()},
                   manifest=hashlib.sha256(csv_path.read_bytes()).hexdigest())

    def build() -> ImageSet:
        imgs, kept, values, groups, skipped = [], [], {c: [] for c in label_cols}, [], []
        for (line, row), p, (file, problem, vals) in zip(body, paths, checked):
            try:
                if problem is not None:
                    raise DataError(problem)
                img = read_image(p, size, color, resample)
            except DataError as e:
                if on_error == "raise":
                    raise
                skipped.append((file, str(e)))
                continue
            imgs.append(img)
            kept.append(file)
            groups.append(row.get("group", str(len(kept) - 1)))
            for c in label_cols:
                values[c].append(vals[c])
        if not kept:
            raise DataError(f"{csv_path}: no loadable images ({len(skipped)} skipped: {skipped[:3]}...)")
        labels = {c: _column(values[c], is_num[c]) for c in label_cols}
        if name_labels:
            labels.update(labels_from_names(kept, table))
        if "group" in header:
            group_names, source = np.unique(np.array(groups, dtype=str), return_inverse=True)
            group_names = tuple(str(g) for g in group_names)
        else:
            group_names, source = (), np.arange(len(kept))
        return ImageSet(np.stack(imgs).astype(np.float32), labels, source.astype(np.int32), tuple(kept),
                        tuple(skipped), group_names)

    return _cached("manifest", folder, paths, names, options, cache, build)


def _column(vals: list, numeric: bool) -> np.ndarray:
    if not numeric:
        return np.array(vals, dtype=str)
    if all(isinstance(v, int) for v in vals):
        return np.array(vals, dtype=np.int64)
    return np.array(vals, dtype=np.float64)
