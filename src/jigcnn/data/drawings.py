"""The drawings data set out of the box: the real folder when given, else the synthetic stand-in."""

from __future__ import annotations

import os
import pathlib

from jigcnn.atomic import write_bytes_atomic
from jigcnn.data.images import ImageSet, load_folder
from jigcnn.data.synth import generate

_SYNTH_VERSION = 1


def default_cache_root() -> pathlib.Path:
    """``$JIGCNN_CACHE``, else ``$XDG_CACHE_HOME/jigcnn``, else ``~/.cache/jigcnn``."""
    env = os.environ.get("JIGCNN_CACHE")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jigcnn"


def synthetic_folder(n: int = 338, seed: int = 0, root: str | os.PathLike | None = None) -> pathlib.Path:
    """A folder holding the synthetic stand-in for (n, seed), generated on first use; returns its path."""
    folder = pathlib.Path(root or default_cache_root()) / f"synth-v{_SYNTH_VERSION}-n{n}-seed{seed}"
    marker = folder / ".complete"
    if not marker.is_file():  # an interrupted generation is simply redone (each file is written atomically)
        generate(folder, n, seed, overwrite=True)  # this folder holds (n, seed) only: a partial set is replaced
        write_bytes_atomic(marker, f"{n} {seed}\n".encode())
    return folder


def load_drawings(folder: str | os.PathLike | None = None, *, n: int = 338, seed: int = 0, **load_kw) -> ImageSet:
    """Load the drawings from ``folder`` (the real set), or the synthetic stand-in (n, seed) when it is None.

    ``load_kw`` goes to :func:`jigcnn.data.images.load_folder` (size, color, resample, cache, on_error, ...).
    """
    if folder is None:
        folder = synthetic_folder(n, seed, load_kw.pop("synth_root", None))
    return load_folder(folder, **load_kw)
