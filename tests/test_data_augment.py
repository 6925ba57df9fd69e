"""Augmentation properties: identity at zero, flips are involutions, noise portion, keys, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jigcnn.data.augment import (
    AugmentConfig,
    augment_batch,
    augment_dataset,
    augment_dataset_x10,
    augment_image,
    keras_preset,
    paper_preset,
    preview,
    save_preview_png,
)


# Few distinct shapes: each (shape, fill) compiles once; configs are traced values and share it.
SHAPE = (6, 58, 36, 1)
BIG = (64, 58, 36, 1)


@pytest.fixture(scope="module")
def batch():
    return jnp.asarray(np.random.default_rng(0).uniform(0, 1, SHAPE).astype(np.float32))


def test_identity_holds_outside_the_value_range():
    x = jnp.asarray(np.random.default_rng(1).normal(0, 5, SHAPE).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(augment_batch(jax.random.key(0), x, AugmentConfig())), np.asarray(x))


def test_zero_parameters_are_the_identity(batch):
    out = augment_batch(jax.random.key(1), batch, AugmentConfig())
    np.testing.assert_array_equal(np.asarray(out), np.asarray(batch))


@pytest.mark.parametrize("cfg,flip", [
    (AugmentConfig(flip_h_prob=1.0), lambda x: x[:, :, ::-1]),
    (AugmentConfig(flip_v_prob=1.0), lambda x: x[:, ::-1]),
])
def test_flips_are_involutions(batch, cfg, flip):
    key = jax.random.key(2)
    once = augment_batch(key, batch, cfg)
    np.testing.assert_array_equal(np.asarray(once), np.asarray(flip(batch)))
    np.testing.assert_array_equal(np.asarray(augment_batch(key, once, cfg)), np.asarray(batch))


def test_flip_probability_half_flips_some_not_all():
    x = jnp.tile(jnp.arange(36.0)[None, None, :, None], (BIG[0], BIG[1], 1, 1))
    out = np.asarray(augment_batch(jax.random.key(3), x, AugmentConfig(flip_h_prob=0.5)))
    flipped = out[:, 0, 0, 0] == 35.0
    assert np.all(flipped | (out[:, 0, 0, 0] == 0.0))
    assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / BIG[0])


def test_noised_portion_matches_setting():
    x = jnp.full(BIG, 0.5, jnp.float32)
    level, portion = 0.4, 0.3
    out = np.asarray(augment_batch(jax.random.key(4), x, AugmentConfig(noise_level=level, noise_portion=portion)))
    changed = out != 0.5
    n = changed.size
    assert abs(changed.mean() - portion) < 4 * np.sqrt(portion * (1 - portion) / n)
    delta = out[changed] - 0.5
    assert np.abs(delta).max() <= level + 1e-6
    assert (delta > 0).mean() == pytest.approx(0.5, abs=0.05)  # positive and negative values


def test_noise_is_clipped_to_the_valid_range():
    x = jnp.concatenate([jnp.ones((3,) + SHAPE[1:]), jnp.zeros((3,) + SHAPE[1:])])
    out = np.asarray(augment_batch(jax.random.key(5), x, AugmentConfig(noise_level=1.0, noise_portion=1.0)))
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out[:3] < 1).any() and (out[3:] > 0).any()
    cfg = AugmentConfig(noise_level=1.0, noise_portion=1.0, value_range=(-1.0, 1.0))
    out = np.asarray(augment_batch(jax.random.key(5), x, cfg))
    assert out.min() >= -1.0 and out.min() < 0.0


def test_stretch_maps_about_the_centre():
    # A horizontal ramp stretched 2x in x: output column j samples input column (j - c) / 2 + c.
    n, h, w, _ = SHAPE
    ramp = jnp.tile(jnp.arange(w, dtype=jnp.float32)[None, None, :, None], (n, h, 1, 1))
    out = np.asarray(augment_batch(jax.random.key(6), ramp, AugmentConfig(stretch_x=(2.0, 2.0))))
    c = (w - 1) / 2
    np.testing.assert_allclose(out[:, :, :, 0], np.broadcast_to((np.arange(w) - c) / 2 + c, (n, h, w)), atol=1e-4)
    # Stretching y leaves a horizontal ramp alone; a shift moves it.
    out = np.asarray(augment_batch(jax.random.key(6), ramp, AugmentConfig(stretch_y=(0.5, 2.0))))
    np.testing.assert_allclose(out, np.asarray(ramp), atol=1e-4)
    out = np.asarray(augment_batch(jax.random.key(6), ramp, AugmentConfig(shift_x=0.1)))
    assert not np.allclose(out, np.asarray(ramp))


def test_same_key_same_output_other_key_differs(batch):
    cfg = paper_preset()
    a = augment_batch(jax.random.key(7), batch, cfg)
    b = augment_batch(jax.random.key(7), batch, cfg)
    c = augment_batch(jax.random.key(8), batch, cfg)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Each image gets its own transform.
    same = jnp.broadcast_to(batch[0], batch.shape)
    out = np.asarray(augment_batch(jax.random.key(7), same, cfg))
    assert not np.array_equal(out[0], out[1])


@pytest.mark.parametrize("shape", [SHAPE, (2, 32, 32, 3)])
def test_shapes_dtypes_range(shape):
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32))
    out = augment_batch(jax.random.key(9), x, paper_preset())
    assert out.shape == shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_under_jit_and_vmap(batch):
    cfg = keras_preset()
    key = jax.random.key(10)
    ref = np.asarray(augment_batch(key, batch, cfg))
    jitted = jax.jit(lambda k, x: augment_batch(k, x, cfg))
    np.testing.assert_array_equal(np.asarray(jitted(key, batch)), ref)
    keys = jax.random.split(key, batch.shape[0])
    vm = jax.jit(jax.vmap(lambda k, x: augment_image(k, x, cfg)))
    np.testing.assert_allclose(np.asarray(vm(keys, batch)), ref, atol=1e-6)
    # vmap over a stack of batches.
    stacked = jax.vmap(lambda k, x: augment_batch(k, x, cfg))(jax.random.split(key, 2), jnp.stack([batch, batch]))
    assert stacked.shape == (2,) + batch.shape


def test_augment_dataset_x10_sources_labels_originals(batch):
    labels = {"age": np.array(["4.5", "5.1", "6.0", "6.7", "7.2", "7.3"]), "age_months": np.arange(6)}
    x, lab, src = augment_dataset_x10(jax.random.key(11), batch, labels, chunk=SHAPE[0])
    assert x.shape == (60,) + batch.shape[1:] and x.dtype == np.float32
    np.testing.assert_array_equal(src, np.repeat(np.arange(6), 10))
    np.testing.assert_array_equal(lab["age"], np.repeat(labels["age"], 10))
    np.testing.assert_array_equal(x[::10], np.asarray(batch))
    assert not np.array_equal(x[1], x[0]) and not np.array_equal(x[1], x[2])
    x2, _, _ = augment_dataset(jax.random.key(11), batch, factor=3, include_original=False, chunk=SHAPE[0])
    assert x2.shape[0] == 18 and not np.array_equal(x2[0], np.asarray(batch[0]))
    x3, _, _ = augment_dataset(jax.random.key(11), batch, factor=3, include_original=False, chunk=SHAPE[0])
    np.testing.assert_array_equal(x2, x3)
    with pytest.raises(ValueError, match="factor must be"):
        augment_dataset(jax.random.key(0), batch, factor=0)


def test_preview_png(batch, tmp_path):
    p = tmp_path / "fig3.png"
    save_preview_png(p, batch[0], jax.random.key(12), paper_preset(), scale=2)
    with Image.open(p) as im:
        assert im.size == ((4 * 36 + 3 * 2) * 2, 58 * 2) and im.mode == "L"
        strip = np.asarray(im)
    np.testing.assert_array_equal(strip[::2, : 36 * 2 : 2], np.round(np.asarray(batch[0])[..., 0] * 255))
    np.testing.assert_array_equal(preview(batch[0], jax.random.key(12), paper_preset(), scale=2)[..., 0], strip)
    assert [f.name for f in tmp_path.iterdir()] == ["fig3.png"]  # no temporary file left


def test_config_validation():
    with pytest.raises(ValueError, match="flip_h_prob"):
        AugmentConfig(flip_h_prob=1.5)
    with pytest.raises(ValueError, match="stretch_x"):
        AugmentConfig(stretch_x=(1.2, 0.8))
    with pytest.raises(ValueError, match="noise_level"):
        AugmentConfig(noise_level=-0.1)
    with pytest.raises(ValueError, match="expects a batch"):
        augment_batch(jax.random.key(0), jnp.zeros((5, 5, 1)), AugmentConfig())


# ---------------------------------------------------------------- flip_crop (CIFAR-style flips + padded crops)


def _windows(image, pad):
    """Every (H, W) window of ``image`` zero-padded by ``pad``, keyed by its offset (NumPy)."""
    h, w = image.shape[:2]
    padded = np.zeros((h + 2 * pad, w + 2 * pad, image.shape[2]), image.dtype)
    padded[pad:pad + h, pad:pad + w] = image
    return {(i, j): padded[i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)}


def test_flip_crop_without_flip_or_pad_is_the_identity():
    from jigcnn.data import flip_crop

    x = np.random.default_rng(1).uniform(size=(5, 6, 7, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(flip_crop(0, False)(jax.random.key(0), jnp.asarray(x))), x)


def test_flip_crop_flips_some_images_and_keeps_the_others():
    from jigcnn.data import flip_crop

    x = np.random.default_rng(2).uniform(size=(64, 5, 6, 1)).astype(np.float32)
    y = np.asarray(flip_crop(pad=0, flip=True)(jax.random.key(3), jnp.asarray(x)))
    same = [np.array_equal(a, b) for a, b in zip(y, x)]
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(y, x)]
    assert all(s != m for s, m in zip(same, mirrored))  # each image exactly one of the two (none is symmetric)
    assert 10 < sum(mirrored) < 54  # p = 1/2 over 64 images


def test_flip_crop_cuts_a_window_of_the_zero_padded_image_at_varying_offsets():
    from jigcnn.data import flip_crop

    pad = 2
    x = np.random.default_rng(4).uniform(0.5, 1, size=(32, 6, 5, 3)).astype(np.float32)
    y = np.asarray(jax.jit(flip_crop(pad=pad, flip=False))(jax.random.key(5), jnp.asarray(x)))
    assert y.shape == x.shape and y.dtype == x.dtype
    offsets = []
    for out, im in zip(y, x):
        hits = [o for o, win in _windows(im, pad).items() if np.array_equal(win, out)]
        assert len(hits) == 1, "every output is one window of the padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets are drawn per image, not one for the batch
    assert {o[0] for o in offsets} <= set(range(2 * pad + 1))


def test_flip_crop_with_both_is_a_window_of_the_image_or_its_mirror():
    from jigcnn.data import flip_crop

    pad = 1
    x = np.random.default_rng(6).uniform(0.5, 1, size=(16, 4, 5, 1)).astype(np.float32)
    y = np.asarray(flip_crop(pad=pad)(jax.random.key(7), jnp.asarray(x)))
    for out, im in zip(y, x):
        cands = list(_windows(im, pad).values()) + list(_windows(im[:, ::-1], pad).values())
        assert any(np.array_equal(c, out) for c in cands)


def test_flip_crop_rejects_bad_arguments():
    from jigcnn.data import flip_crop

    with pytest.raises(ValueError, match="pad must be an int >= 0.*-1"):
        flip_crop(pad=-1)
    with pytest.raises(ValueError, match="pad must be an int"):
        flip_crop(pad=1.5)
    with pytest.raises(ValueError, match=r"batch \(N, H, W, C\)"):
        flip_crop(pad=1)(jax.random.key(0), jnp.zeros((4, 4, 1)))
