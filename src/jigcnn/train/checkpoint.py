"""Checkpoints: any pytree (params, model state, optax state with masks and PRNG keys) plus a JSON header.

Format: one ``.npz`` file; member ``leaf_<i>`` is the i-th leaf of the flattened
tree (PRNG keys stored as ``jax.random.key_data`` and re-wrapped with their
implementation on load), member ``__header__`` is UTF-8 JSON with the format
version, the tree structure (``str(treedef)`` and every leaf's path, shape and
dtype), a *fingerprint* (SHA-256 of the model description and the run config)
with the description itself, and free metadata (epoch, history, stopping state).

Writes are atomic: a temporary file in the same directory, flushed and fsynced,
then ``os.replace`` over the old checkpoint (and the directory fsynced), so a
run killed at any moment leaves either the previous checkpoint or the new one.
Before it is replaced, the old checkpoint is kept as the previous generation
``checkpoint.prev.npz`` (a hard link, or a copy); :func:`load` falls back to it,
with a warning naming the corrupt file, when the latest one cannot be read.
Temporary files a killed save left behind (``.checkpoint.*.tmp.npz``) are removed
at the next save or load of that checkpoint. Every error names the file and what
is wrong with it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
import warnings
import zipfile
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn.atomic import atomic_path, write_bytes_atomic
from jigcnn.errors import CheckpointError, OutputPathError

FORMAT = "jigcnn-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.npz"


class CheckpointMismatch(CheckpointError):
    """The checkpoint was written for another model, config or state structure."""


class CheckpointCorrupt(CheckpointError):
    """The checkpoint file cannot be read: truncated, empty, garbage or a failed checksum."""


class CheckpointWriteError(OutputPathError):
    """A checkpoint could not be written (disk full, no permission); the message names the path."""


class OverwriteDir(str):
    """A checkpoint folder whose existing checkpoint may be replaced (see :func:`overwrite`)."""

    def __repr__(self) -> str:
        return f"overwrite({str(self)!r})"


def overwrite(checkpoint_dir: str | os.PathLike) -> OverwriteDir:
    """Mark ``checkpoint_dir`` so ``fit`` / ``cross_validate`` replace a checkpoint already there.

    Without it a run that does not resume refuses a folder holding a checkpoint. With it, the
    old checkpoint and its previous generation are removed when the run starts (after every
    other argument has been checked).
    """
    return OverwriteDir(os.fspath(checkpoint_dir))


def wants_overwrite(checkpoint_dir) -> bool:
    """Whether ``checkpoint_dir`` was marked with :func:`overwrite`."""
    return isinstance(checkpoint_dir, OverwriteDir)


def previous_path(path: str | os.PathLike) -> str:
    """The previous generation of checkpoint ``path``: ``checkpoint.npz`` -> ``checkpoint.prev.npz``."""
    base, ext = os.path.splitext(os.fspath(path))
    return f"{base}.prev{ext}"


def corrupt_path(path: str | os.PathLike) -> str:
    """Where an unreadable checkpoint is moved aside when resuming falls back: ``checkpoint.corrupt.npz``."""
    base, ext = os.path.splitext(os.fspath(path))
    return f"{base}.corrupt{ext}"


def stale_temps(path: str | os.PathLike) -> list[str]:
    """The temporary files a killed save of ``path`` (or of its previous generation) left beside it."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    base, ext = os.path.splitext(name)
    return sorted(glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}.*.tmp{glob.escape(ext)}")))


def clean_stale_temps(path: str | os.PathLike) -> list[str]:
    """Remove :func:`stale_temps` of ``path``; returns the removed paths."""
    removed = []
    for tmp in stale_temps(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def verify(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointCorrupt` naming ``path`` unless every member of the file passes its CRC check."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
        raise CheckpointCorrupt(f"checkpoint {path} is unreadable (truncated, empty or not a checkpoint): "
                                f"{type(e).__name__}: {e}") from None
    if bad is not None:
        raise CheckpointCorrupt(f"checkpoint {path} is corrupt: member {bad!r} fails its CRC check")


def _keep_previous(path: str) -> None:
    """Keep the checkpoint at ``path`` (if any, and readable) as its previous generation, atomically."""
    if not os.path.exists(path):
        return
    try:
        verify(path)
    except CheckpointCorrupt as e:
        warnings.warn(f"{e}; not keeping it as the previous generation {previous_path(path)}", stacklevel=3)
        return
    with atomic_path(previous_path(path)) as tmp:
        os.remove(tmp)
        try:
            os.link(path, tmp)  # the new checkpoint replaces the name, the old inode lives on here
        except OSError:
            shutil.copyfile(path, tmp)


def restore_previous(path: str | os.PathLike) -> str:
    """Put the previous generation back as checkpoint ``path`` (which is missing), with a warning; returns it."""
    path = os.fspath(path)
    prev = previous_path(path)
    with atomic_path(path) as tmp:
        shutil.copyfile(prev, tmp)
    warnings.warn(f"checkpoint {path} is missing: resuming from its previous generation {prev}", stacklevel=3)
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return np.asarray(x).tolist()
    return repr(x)


def describe_model(model) -> dict:
    """A JSON-able description of a model: its input shape and each layer's spec (repr)."""
    return {"input_shape": list(model.input_shape) if getattr(model, "input_shape", None) else None,
            "layers": [repr(layer) for layer in model.layers]}


def fingerprint(model, config: dict | None) -> tuple[str, dict]:
    """(SHA-256 hex, description) of a model and a run config (the config must be JSON-able)."""
    desc = {"model": describe_model(model), "config": _jsonable(config or {})}
    blob = json.dumps(desc, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest(), desc


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaf_to_numpy(x):
    if _is_key(x):
        return np.asarray(jax.random.key_data(x)), str(jax.random.key_impl(x))
    return np.asarray(x), None


def save(path: str | os.PathLike, tree: Any, meta: dict | None = None, *, fingerprint: str | None = None,
         description: dict | None = None) -> None:
    """Write ``tree`` and ``meta`` to ``path`` atomically, keeping the old checkpoint as ``*.prev.npz``.

    Stale temporary files of ``path`` are removed first; an ``OSError`` (disk full, no
    permission) is raised as :class:`CheckpointWriteError` naming ``path``.
    """
    path = os.fspath(path)
    clean_stale_temps(path)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays, info = {}, []
    for i, (p, leaf) in enumerate(leaves_with_paths):
        arr, impl = _leaf_to_numpy(leaf)
        arrays[f"leaf_{i}"] = arr
        info.append({"path": jax.tree_util.keystr(p), "shape": list(arr.shape), "dtype": str(arr.dtype),
                     "key_impl": impl})
    header = {"format": FORMAT, "treedef": str(treedef), "leaves": info, "fingerprint": fingerprint,
              "description": description, "meta": _jsonable(meta or {})}
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        _keep_previous(path)
        write_bytes_atomic(path, buf.getvalue())
    except OSError as e:
        raise CheckpointWriteError(f"could not write checkpoint {path}: {e.strerror or e}"
                                   + (f" ({e.filename})" if getattr(e, "filename", None) else "")) from e


_READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error, UnicodeDecodeError,
                json.JSONDecodeError)


def _read(path: str, header_only: bool = False) -> tuple[dict, dict]:
    """(header, {member: array}) of checkpoint ``path``; :class:`CheckpointCorrupt` naming it when unreadable."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if os.path.getsize(path) == 0:
            raise CheckpointCorrupt(f"checkpoint {path} is empty (0 bytes)")
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CheckpointCorrupt(f"checkpoint {path} is a single .npy array, not a jigcnn checkpoint")
            if "__header__" not in z.files:
                raise CheckpointCorrupt(f"checkpoint {path} has no __header__ member: not a jigcnn checkpoint")
            header = json.loads(bytes(z["__header__"]).decode())
            if not isinstance(header, dict):
                raise CheckpointCorrupt(f"checkpoint {path}: its header is not a JSON object")
            arrays = {} if header_only else {k: z[k] for k in z.files if k != "__header__"}
    except CheckpointError:
        raise
    except _READ_ERRORS as e:
        raise CheckpointCorrupt(f"checkpoint {path} is unreadable (truncated, corrupt or not a checkpoint): "
                                f"{type(e).__name__}: {e}") from None
    return header, arrays


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a checkpoint (no arrays loaded); :class:`CheckpointCorrupt` naming it when unreadable."""
    return _read(os.fspath(path), header_only=True)[0]


def _describe_difference(saved: dict | None, current: dict | None) -> str:
    """A human sentence naming the first differences between two descriptions."""
    if not saved or not current:
        return "no model/config description to compare"
    out = []
    sm, cm = saved.get("model", {}), current.get("model", {})
    if sm.get("input_shape") != cm.get("input_shape"):
        out.append(f"input shape {sm.get('input_shape')} in the checkpoint vs {cm.get('input_shape')} now")
    sl, cl = sm.get("layers", []), cm.get("layers", [])
    if len(sl) != len(cl):
        out.append(f"{len(sl)} layers in the checkpoint vs {len(cl)} now")
    for i, (a, b) in enumerate(zip(sl, cl)):
        if a != b:
            out.append(f"layer {i + 1} is {a} in the checkpoint vs {b} now")
            break
    sc, cc = saved.get("config", {}), current.get("config", {})
    for k in sorted(set(sc) | set(cc)):
        if sc.get(k, "<absent>") != cc.get(k, "<absent>"):
            out.append(f"config {k!r} is {sc.get(k, '<absent>')!r} in the checkpoint vs {cc.get(k, '<absent>')!r} now")
    return "; ".join(out) or "descriptions equal but fingerprints differ"


def load(path: str | os.PathLike, like: Any, *, fingerprint: str | None = None,
         description: dict | None = None) -> tuple[Any, dict]:
    """(tree, meta) read from ``path``, shaped like ``like`` (a template tree: structure, shapes, dtypes).

    Raises :class:`CheckpointMismatch` naming what differs when the fingerprint
    (model/config) or the tree structure, a shape or a dtype does not match, and
    :class:`CheckpointCorrupt` naming the file when it cannot be read. When ``path``
    is unreadable but its previous generation (``*.prev.npz``) is good, that one is
    loaded instead, with a warning; the corrupt file is moved to ``*.corrupt.npz``
    (so the next save does not keep it as the previous generation). Stale temporary
    files of ``path`` are removed first.
    """
    path = os.fspath(path)
    clean_stale_temps(path)
    corrupt = None
    try:
        header, arrays = _read(path)
    except CheckpointCorrupt as e:
        prev = previous_path(path)
        if not os.path.exists(prev):
            raise
        try:
            header, arrays = _read(prev)
        except CheckpointCorrupt as e2:
            raise CheckpointCorrupt(f"{e}; its previous generation is unreadable too: {e2}") from None
        corrupt, path = (path, e), prev
    tree, meta = _restore(path, header, arrays, like, fingerprint, description)
    if corrupt is not None:
        latest, err = corrupt
        aside = corrupt_path(latest)
        os.replace(latest, aside)
        warnings.warn(f"{err}; resuming from the previous checkpoint {path} (epoch {meta.get('epoch')}); "
                      f"the corrupt file is kept as {aside}", stacklevel=2)
    return tree, meta


def _restore(path, header, arrays, like, fingerprint, description):
    """(tree, meta) from a read checkpoint, after the fingerprint, structure, shape and dtype checks."""
    if header.get("format") != FORMAT:
        raise CheckpointMismatch(f"{path}: not a jigcnn checkpoint (format {header.get('format')!r})")
    if fingerprint is not None and header.get("fingerprint") != fingerprint:
        raise CheckpointMismatch(
            f"refusing checkpoint {path}: it was written for another model/config: "
            f"{_describe_difference(header.get('description'), description)}")
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    info = header.get("leaves")
    if not isinstance(info, list) or "treedef" not in header:
        raise CheckpointCorrupt(f"checkpoint {path}: its header lacks the tree structure (not written by jigcnn)")
    paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_paths]
    saved_paths = [i["path"] for i in info]
    if str(treedef) != header["treedef"] or paths != saved_paths:
        diff = next((f"{a!r} in the checkpoint vs {b!r} now" for a, b in zip(saved_paths, paths) if a != b),
                    f"{len(saved_paths)} arrays in the checkpoint vs {len(paths)} now")
        raise CheckpointMismatch(
            f"refusing checkpoint {path}: its state has another structure (model, optimizer or "
            f"regularisation changed): first difference: {diff}")
    leaves = []
    for i, ((p, tmpl), inf) in enumerate(zip(leaves_with_paths, info)):
        if f"leaf_{i}" not in arrays:
            raise CheckpointCorrupt(f"checkpoint {path} lacks array leaf_{i} ({inf['path']}): truncated or "
                                    "not written by jigcnn")
        arr = arrays[f"leaf_{i}"]
        want = _expected(tmpl)
        if list(arr.shape) != list(want[0]) or str(arr.dtype) != want[1]:
            raise CheckpointMismatch(
                f"refusing checkpoint {path}: array {inf['path']} is {arr.dtype}{list(arr.shape)} in the "
                f"checkpoint vs {want[1]}{list(want[0])} now")
        if inf.get("key_impl"):
            leaves.append(jax.random.wrap_key_data(jnp.asarray(arr), impl=inf["key_impl"]))
        else:
            leaves.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, leaves), header.get("meta", {})


def _expected(tmpl) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) a template leaf is stored with (PRNG keys as their key data)."""
    if _is_key(tmpl):
        s = jax.eval_shape(jax.random.key_data, tmpl)
        return tuple(s.shape), str(s.dtype)
    if hasattr(tmpl, "shape") and hasattr(tmpl, "dtype"):
        return tuple(tmpl.shape), str(np.dtype(tmpl.dtype))
    a = np.asarray(tmpl)
    return a.shape, str(a.dtype)
