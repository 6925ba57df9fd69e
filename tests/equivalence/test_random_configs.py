"""Randomly drawn conv configurations (seeded): hand-written gradients equal jax.grad's."""

import jax.numpy as jnp
import numpy as np
import pytest

from jigcnn import Conv2D, Dense, Flatten, MaxPool, AvgPool, Sequential
from jigcnn.activations import ACTIVATION_NAMES
from jigcnn.testing import check_network

ELEMENTWISE = [a for a in ACTIVATION_NAMES if a not in ("softmax", "log_softmax", "linear")]
LOSSES = ["mae", "mse", "softmax_cross_entropy", "cross_entropy", "nll", "binary_cross_entropy"]
N_CONFIGS = 40


def draw(seed):
    """One random net: a conv (random geometry), an optional pool, then a head matching a random loss."""
    rng = np.random.default_rng(seed)
    kh, kw = rng.integers(1, 8, 2)
    sy, sx = rng.integers(1, 4, 2)
    padding = [ "valid", "same", int(rng.integers(0, 4)),
                ((int(rng.integers(0, 4)), int(rng.integers(0, 4))), (int(rng.integers(0, 4)), int(rng.integers(0, 4))))][rng.integers(0, 4)]
    pad_mode = ["zeros", "edge"][rng.integers(0, 2)]
    cin, cout = rng.integers(1, 9, 2)
    padded_min = (kh, kw)
    # input at least as large as the kernel once padded (awkward cases allowed: kernel > input with padding)
    h = int(rng.integers(max(1, kh - 3), kh + 9))
    w = int(rng.integers(max(1, kw - 3), kw + 9))
    conv = Conv2D(int(cout), (int(kh), int(kw)), strides=(int(sy), int(sx)), padding=padding, pad_mode=pad_mode,
                  bias=["learn", "frozen", "none"][rng.integers(0, 3)], activation=ELEMENTWISE[rng.integers(0, len(ELEMENTWISE))],
                  groups=int(cin) if (cin == cout and rng.random() < 0.2) else 1)
    try:
        out = conv.output_shape((h, w, int(cin)))
    except ValueError:
        h, w = padded_min[0] + 2, padded_min[1] + 2
        out = conv.output_shape((h, w, int(cin)))
    layers = [conv]
    if min(out[:2]) >= 2 and rng.random() < 0.4:
        layers.append([MaxPool, AvgPool][rng.integers(0, 2)](2, int(rng.integers(1, 3))))
    loss = LOSSES[rng.integers(0, len(LOSSES))]
    classes = int(rng.integers(2, 6))
    if loss in ("mae", "mse", "binary_cross_entropy") and rng.random() < 0.5:
        pass  # the conv output itself is the (matrix) output
    else:
        head = {"cross_entropy": "softmax", "nll": "log_softmax"}.get(loss, "identity")
        layers += [Flatten(), Dense(classes, activation=head)]
    batch = int(rng.integers(1, 6))
    return Sequential(layers, input_shape=(h, w, int(cin))), loss, batch, rng


# the default run checks the first 20 draws in float64 and 6 in float32; -m slow runs all 40 in both
N_DEFAULT = {np.float64: 20, np.float32: 6}
CASES = [pytest.param(seed, dtype, marks=pytest.mark.slow if seed >= N_DEFAULT[dtype] else ())
         for seed in range(N_CONFIGS) for dtype in (np.float64, np.float32)]


@pytest.mark.parametrize("seed,dtype", CASES)
def test_random_config(seed, dtype, x64):
    model, loss, batch, rng = draw(seed)
    x = jnp.asarray(rng.random((batch, *model.input_shape)), dtype)
    out = (batch, *model.shapes()[-1])
    if loss in ("mae", "mse", "binary_cross_entropy"):
        targets = jnp.asarray(rng.random(out) + (0.5 if loss != "binary_cross_entropy" else 0.0), dtype)
    else:
        targets = jnp.asarray(rng.integers(0, out[-1], batch))
    check_network(model, loss, x, targets, rtol={np.float64: 1e-10, np.float32: 1e-4}[dtype])


def test_awkward_cases_are_drawn():
    """The generator reaches kernels larger than the input, strides that do not divide, and 1x1 outputs."""
    big_kernel = non_dividing = one_by_one = False
    for seed in range(N_CONFIGS):
        model, *_ = draw(seed)
        conv = model.layers[0]
        h, w, _ = model.input_shape
        k, s, _, _, out = conv.geometry(model.input_shape)
        big_kernel |= k[0] > h or k[1] > w
        non_dividing |= any((n + sum(p) - kk) % ss for n, p, kk, ss in zip((h, w), conv.geometry(model.input_shape)[3], k, s))
        one_by_one |= out[:2] == (1, 1)
    assert big_kernel and non_dividing and one_by_one
