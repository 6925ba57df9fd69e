"""On-device augmentation (paper Sec. 5.1, Fig. 3): affine warps, flips and noising, pure JAX.

Every function is pure, takes its randomness from a key, and runs under ``jit`` and ``vmap``.
One affine matrix (rotation x stretch, plus a shift) is sampled per image and resampled with
``jax.scipy.ndimage.map_coordinates``; flips are ``jnp.where`` selections; noising adds
uniform values in ``[-level, +level] * (hi - lo)`` to a random portion of the pixels and clips
to the valid range.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jigcnn import prng
from jigcnn.atomic import write_bytes_atomic


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters; the zero config (the default) is the identity.

    rotation_deg: angle drawn uniformly in [-rotation_deg, +rotation_deg].
    stretch_x, stretch_y: scale factors drawn uniformly in each (lo, hi) range.
    shift_x, shift_y: shift drawn uniformly in [-s, +s], as a fraction of the width / height.
    flip_h_prob, flip_v_prob: probabilities of a horizontal (left-right) / vertical flip.
    noise_level: noise amplitude relative to the value range; noise_portion: the portion of pixels noised.
    fill: value outside the picture after a warp, or None to repeat the nearest edge pixel.
    value_range: the valid pixel range that noising clips to.
    """

    rotation_deg: float = 0.0
    stretch_x: tuple[float, float] = (1.0, 1.0)
    stretch_y: tuple[float, float] = (1.0, 1.0)
    shift_x: float = 0.0
    shift_y: float = 0.0
    flip_h_prob: float = 0.0
    flip_v_prob: float = 0.0
    noise_level: float = 0.0
    noise_portion: float = 0.0
    fill: float | None = None
    value_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        for name in ("flip_h_prob", "flip_v_prob", "noise_portion"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {v}")
        for name in ("rotation_deg", "shift_x", "shift_y", "noise_level"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("stretch_x", "stretch_y"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig.{name} must be (lo, hi) with 0 < lo <= hi, got {(lo, hi)}")
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"AugmentConfig.value_range must be (lo, hi) with lo < hi, got {self.value_range}")


def paper_preset() -> AugmentConfig:
    """The paper's IgNet operations (Fig. 3): rotation, stretch in x and y, shifts, left-right flips, noising.

    The paper gives no numbers; these are moderate values that keep a drawing recognisable.
    """
    return AugmentConfig(rotation_deg=10.0, stretch_x=(0.9, 1.1), stretch_y=(0.9, 1.1), shift_x=0.05, shift_y=0.05,
                         flip_h_prob=0.5, noise_level=0.3, noise_portion=0.1)


def keras_preset() -> AugmentConfig:
    """The Keras solution's operations (Sec. 4.2): rotations, shifts, horizontal and vertical flips, no noising."""
    return AugmentConfig(rotation_deg=10.0, shift_x=0.1, shift_y=0.1, flip_h_prob=0.5, flip_v_prob=0.5)


def _params(cfg: AugmentConfig) -> dict:
    # Numbers travel as traced values, so one compilation serves every config of a given image shape.
    vals = dict(rot=cfg.rotation_deg, sx0=cfg.stretch_x[0], sx1=cfg.stretch_x[1], sy0=cfg.stretch_y[0],
                sy1=cfg.stretch_y[1], tx=cfg.shift_x, ty=cfg.shift_y, ph=cfg.flip_h_prob, pv=cfg.flip_v_prob,
                nl=cfg.noise_level, npo=cfg.noise_portion, lo=cfg.value_range[0], hi=cfg.value_range[1])
    return {k: jnp.asarray(v, jnp.float32) for k, v in vals.items()}


def _warp(key, image, p, fill):
    h, w = image.shape[0], image.shape[1]
    kr, ksx, ksy, ktx, kty = jax.random.split(key, 5)
    theta = jnp.deg2rad(jax.random.uniform(kr, (), minval=-p["rot"], maxval=p["rot"]))
    sx = jax.random.uniform(ksx, (), minval=p["sx0"], maxval=p["sx1"])
    sy = jax.random.uniform(ksy, (), minval=p["sy0"], maxval=p["sy1"])
    tx = jax.random.uniform(ktx, (), minval=-p["tx"], maxval=p["tx"]) * w
    ty = jax.random.uniform(kty, (), minval=-p["ty"], maxval=p["ty"]) * h
    c, s = jnp.cos(theta), jnp.sin(theta)
    # Forward map in (y, x) about the centre: out = R @ diag(sy, sx) @ (in - ctr) + ctr + t.
    # Sampling needs its inverse: in = diag(1/sy, 1/sx) @ R^T @ (out - ctr - t) + ctr.
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    dy, dx = yy - cy - ty, xx - cx - tx
    iy = (c * dy + s * dx) / sy + cy
    ix = (-s * dy + c * dx) / sx + cx
    mode, cval = ("nearest", 0.0) if fill is None else ("constant", fill)

    def one_channel(ch):
        return jax.scipy.ndimage.map_coordinates(ch, [iy, ix], order=1, mode=mode, cval=cval)

    return jax.vmap(one_channel, in_axes=2, out_axes=2)(image)


def _noise(key, image, p):
    km, kv = jax.random.split(key)
    mask = prng.uniform(km, image.shape[:2] + (1,)) < p["npo"]
    vals = prng.uniform(kv, image.shape, minval=-1.0, maxval=1.0) * (p["nl"] * (p["hi"] - p["lo"]))
    # Only noised pixels are clipped: with noising off the warp's output passes unchanged.
    return jnp.where(mask, jnp.clip(image + vals, p["lo"], p["hi"]), image)


def _augment_one(key, image, p, fill):
    kw, kh, kv, kn = jax.random.split(key, 4)
    out = _warp(kw, image, p, fill)
    out = jnp.where(jax.random.uniform(kh) < p["ph"], out[:, ::-1], out)
    out = jnp.where(jax.random.uniform(kv) < p["pv"], out[::-1], out)
    return _noise(kn, out, p).astype(image.dtype)


def augment_image(key, image, config: AugmentConfig):
    """One augmented copy of one image (H, W, C): warp, then flips, then noising."""
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"augment_image expects one image (H, W, C), got shape {image.shape}")
    return _augment_one(key, image, _params(config), config.fill)


@functools.partial(jax.jit, static_argnames="fill")
def _augment_batch(key, images, p, fill):
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(_augment_one, in_axes=(0, 0, None, None))(keys, images, p, fill)


def augment_batch(key, images, config: AugmentConfig):
    """Augment a batch (N, H, W, C): one independent random transform per image (jitted inside; jit/vmap-safe)."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"augment_batch expects a batch (N, H, W, C), got shape {images.shape}")
    return _augment_batch(key, images, _params(config), config.fill)


def augment_dataset(
    key,
    images,
    labels: Mapping[str, np.ndarray] | None = None,
    factor: int = 10,
    config: AugmentConfig | None = None,
    include_original: bool = True,
    chunk: int = 4096,
):
    """A ``factor``-times data set: (images, labels, source) with ``source[j]`` the index of the original image.

    Copies of drawing i sit at rows ``i*factor .. i*factor+factor-1``; with ``include_original`` the
    first of them is the unaltered drawing. Labels are repeated to match. ``source`` lets a grouped
    split keep all copies of one drawing on one side (the paper split after augmenting, which does not).
    The copies are a function of (key, chunk): each chunk of rows draws from ``fold_in(key, first_row)``.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    config = paper_preset() if config is None else config
    n = images.shape[0]
    src = np.repeat(np.arange(n, dtype=np.int32), factor)
    out = np.empty((n * factor,) + images.shape[1:], np.float32)
    chunk = max(int(chunk), 1)
    for start in range(0, n * factor, chunk):  # a loop over chunks (memory bound), not over images
        rows = np.arange(start, min(start + chunk, n * factor))
        ck = jax.random.fold_in(key, start)
        out[rows] = np.asarray(augment_batch(ck, jnp.asarray(images[src[rows]]), config))
    if include_original:
        out[::factor] = images
    reps = {} if labels is None else {k: np.repeat(np.asarray(v), factor, axis=0) for k, v in labels.items()}
    return out, reps, src


def augment_dataset_x10(key, images, labels=None, config: AugmentConfig | None = None, include_original: bool = True,
                        chunk: int = 4096):
    """The paper's ten-fold augmentation: ``augment_dataset`` with ``factor=10``."""
    return augment_dataset(key, images, labels, 10, config, include_original, chunk)


def preview(image, key, config: AugmentConfig | None = None, n_copies: int = 3, scale: int = 4) -> np.ndarray:
    """A uint8 strip like the paper's Fig. 3: the image and ``n_copies`` augmented copies side by side."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"preview expects one image (H, W) or (H, W, C), got shape {image.shape}")
    config = paper_preset() if config is None else config
    copies = np.asarray(augment_batch(key, jnp.broadcast_to(image, (n_copies,) + image.shape), config))
    lo, hi = config.value_range
    tiles = [image] + list(copies)
    gap = np.full((image.shape[0], 2, image.shape[2]), hi, np.float32)
    strip = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)
    strip = np.clip((strip - lo) / (hi - lo), 0, 1)
    strip = np.repeat(np.repeat(strip, scale, 0), scale, 1)
    return np.round(strip * 255).astype(np.uint8)


def save_preview_png(path: str | os.PathLike, image, key, config: AugmentConfig | None = None, n_copies: int = 3,
                     scale: int = 4) -> None:
    """Write ``preview(...)`` as a PNG (atomically): one drawing and its augmented copies, as in Fig. 3."""
    strip = preview(image, key, config, n_copies, scale)
    im = Image.fromarray(strip[..., 0] if strip.shape[2] == 1 else strip)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())


def flip_crop(pad: int = 4, flip: bool = True):
    """``augment(key, images)``: random left-right flips and random crops of the zero-padded batch (jit-safe).

    Each image (N, H, W, C) is mirrored with probability 1/2 (when ``flip``), then zero-padded by
    ``pad`` pixels on every side and cut back to (H, W) at an offset drawn uniformly from
    ``0 .. 2 * pad`` in each direction (when ``pad`` > 0): the CIFAR-style augmentation, one
    independent draw per image. ``flip_crop(0, False)`` is the identity.
    """
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"flip_crop: pad must be an int >= 0 (pixels of zero padding), got {pad!r}")
    pad = int(pad)
    flip = bool(flip)

    def augment(key, x):
        if x.ndim != 4:
            raise ValueError(f"flip_crop: expects a batch (N, H, W, C), got shape {x.shape}")
        kf, kc = jax.random.split(key)
        n, h, w, c = x.shape
        if flip:
            f = prng.bernoulli(kf, 0.5, (n, 1, 1, 1))
            x = jnp.where(f, x[:, :, ::-1, :], x)
        if pad:
            xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            off = prng.randint(kc, (n, 2), 0, 2 * pad + 1)
            x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c)))(xp, off)
        return x

    return augment
