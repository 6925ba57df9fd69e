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
import os
import pathlib
import warnings
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jigcnn.atomic import atomic_path
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
_CACHE_VERSION = 1


class DataError(ValueError):
    """Bad input data; the message names the file (or argument) and what is wrong."""


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
                im = _flatten_alpha(im)
                im = im.convert(color).resize((int(size[1]), int(size[0])), RESAMPLE[resample])
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({e})") from None
    arr = np.asarray(im, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _flatten_alpha(im: Image.Image) -> Image.Image:
    # Transparent areas become white paper rather than black.
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
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
        try:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"<missing>")
        h.update(b"\0")


def _cache_load(path: pathlib.Path) -> ImageSet | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = {k[6:]: z[k] for k in z.files if k.startswith("label:")}
            skipped = tuple((str(a), str(b)) for a, b in z["skipped"].reshape(-1, 2))
            return ImageSet(
                z["images"], labels, z["source"], tuple(str(f) for f in z["files"]), skipped,
                tuple(str(g) for g in z["group_names"]),
            )
    except (OSError, KeyError, ValueError) as e:
        warnings.warn(f"{path}: ignoring unreadable cache file ({e})")
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
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    if not files:
        raise DataError(f"{folder}: empty folder (no files to load)")
    return files


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
    Each drawing is its own source (source id = its index).
    """
    _check_options(size, color, resample, on_error)
    folder = pathlib.Path(folder)
    paths = _folder_files(folder)
    names = [p.name for p in paths]
    table = dict(who_table or DEFAULT_WHO_TABLE)
    options = dict(size=list(size), color=color, resample=resample, on_error=on_error,
                   who={k: dataclasses.astuple(v) for k, v in table.items()})

    def build() -> ImageSet:
        imgs, kept, skipped = [], [], []
        for p, n in zip(paths, names):
            try:
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


# ---------------------------------------------------------------- CSV manifest


def _parse_number(s: str):
    try:
        return int(s)
    except ValueError:
        return float(s)


def _read_manifest_rows(csv_path: pathlib.Path):
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read manifest ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{csv_path}: manifest is not UTF-8 text ({e})") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
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

    Column types are inferred (numeric when every value is a number) unless named in ``numeric`` or
    ``categorical``; an empty cell or a non-number in a numeric column is an error naming the file.
    ``group`` values become the source ids (all images of one group stay on one side of a split);
    without it each row is its own source. ``name_labels=True`` adds labels parsed from the file names.
    """
    _check_options(size, color, resample, on_error)
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
    options = dict(size=list(size), color=color, resample=resample, on_error=on_error, numeric=sorted(numeric),
                   categorical=sorted(categorical), name_labels=name_labels,
                   who={k: dataclasses.astuple(v) for k, v in table.items()},
                   manifest=hashlib.sha256(csv_path.read_bytes()).hexdigest())

    def build() -> ImageSet:
        inferred = {c: all(_is_number(row[c]) for _, row in body) for c in label_cols}
        is_num = {c: (c in numeric) or (c not in categorical and inferred[c]) for c in label_cols}
        imgs, kept, values, groups, skipped = [], [], {c: [] for c in label_cols}, [], []
        for (line, row), p in zip(body, paths):
            where = f"{csv_path.name} line {line} ({row['file']})"
            try:
                if not row["file"]:
                    raise DataError(f"{where}: empty 'file' cell")
                vals = {}
                for c in label_cols:
                    v = row[c]
                    if v == "":
                        raise DataError(f"{where}: empty label in column {c!r}")
                    if is_num[c]:
                        if not _is_number(v):
                            raise DataError(f"{where}: column {c!r} must be a number, got {v!r}")
                        v = _parse_number(v)
                    vals[c] = v
                if "group" in row and row["group"] == "":
                    raise DataError(f"{where}: empty 'group' cell")
                if name_labels:
                    try:
                        parse_name(row["file"], table)
                    except ValueError as e:
                        raise DataError(f"{where}: {e}") from None
                if not p.is_file():
                    raise DataError(f"{p}: file listed in {csv_path.name} line {line} does not exist")
                img = read_image(p, size, color, resample)
            except DataError as e:
                if on_error == "raise":
                    raise
                skipped.append((row["file"], str(e)))
                continue
            imgs.append(img)
            kept.append(row["file"])
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


def _is_number(s: str) -> bool:
    try:
        v = float(s)
    except ValueError:
        return False
    return np.isfinite(v)


def _column(vals: list, numeric: bool) -> np.ndarray:
    if not numeric:
        return np.array(vals, dtype=str)
    if all(isinstance(v, int) for v in vals):
        return np.array(vals, dtype=np.int64)
    return np.array(vals, dtype=np.float64)
