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
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jigcnn.atomic import write_bytes_atomic

FORMAT = "jigcnn-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.npz"


class CheckpointMismatch(ValueError):
    """The checkpoint was written for another model, config or state structure."""


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
    """Write ``tree`` and ``meta`` to ``path`` atomically (temp file, fsync, ``os.replace``)."""
    path = os.fspath(path)
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
    write_bytes_atomic(path, buf.getvalue())

def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a checkpoint (no arrays loaded)."""
    with np.load(os.fspath(path), allow_pickle=False) as z:
        return json.loads(bytes(z["__header__"]).decode())


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
    (model/config) or the tree structure, a shape or a dtype does not match.
    """
    path = os.fspath(path)
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["__header__"]).decode())
        if header.get("format") != FORMAT:
            raise CheckpointMismatch(f"{path}: not a jigcnn checkpoint (format {header.get('format')!r})")
        if fingerprint is not None and header.get("fingerprint") != fingerprint:
            raise CheckpointMismatch(
                f"refusing checkpoint {path}: it was written for another model/config: "
                f"{_describe_difference(header.get('description'), description)}")
        leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
        info = header["leaves"]
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
            arr = z[f"leaf_{i}"]
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
