"""Reference networks from the seed documents, each a `Sequential` with its input shape set.

Every constructor cites where its configuration comes from. Classification heads are a
separate `Activation` layer (`head_activation`), so the parameter counts are those of the
published nets whatever head is chosen; pass `head_activation=None` to get logits for
`losses.softmax_cross_entropy`.

| name | source | parameters |
|---|---|---|
| ignet_fig5 | IgNet paper Fig. 5 (1 conv + 1 FC, identity, Eq. 3 init, frozen biases) | depends on `filters` |
| ignet_deep | IgNet paper Fig. 7 (2..7 layers; 1 = a lone FC layer) | depends on depth |
| lenet5 | thesis Sec. 3.6.1, Figs. 12-13 | 61,706 |
| annt_lenet | ANNT article, MNIST net with the LeNet-5 connection table | 51,002 |
| thesis_cifar_cnn | thesis Sec. 5.1.2, Fig. 22 | 329,194 (384 non-trainable) |
| thesis_fashion_cnn | thesis Sec. 5.2.2, Fig. 31 | 267,178 (384 non-trainable) |
| thesis_mlp | thesis Secs. 5.1.1 / 5.2.1, Figs. 18 / 27 | 404,010 / 111,146 |
| tutorial_cifar_net | CIFAR-10 convnet tutorial (seed 004) | 631,658 |
| alexnet | thesis Sec. 3.6.2, Figs. 14-15 | 60,965,224 |
| keras_drawings_net | IgNet paper Sec. 4, Fig. 2 (the Keras net) | depends on outputs |
| vgg_small | a small VGG-style baseline (not from the seeds) | 288,746 (+896 non-trainable) |
| resnet20 | He et al. 2016, Sec. 4.2 (CIFAR-10 ResNet-20, shortcut option A) | 269,722 (+1,376 non-trainable) |
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jigcnn.initializers import ignet
from jigcnn.layers import Activation, AvgPool, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool
from jigcnn.layers.graph import GlobalAvgPool, IdentityShortcut, Residual, Serial
from jigcnn.model import Sequential

# LeCun et al. 1998, Table I: which S2 feature map (row, 0..5) feeds which C3 map (column, 0..15).
# It is ANNT's 16x6 `connectionTable` (rows = output maps) transposed to our (in, out) layout.
LENET5_C3_TABLE = np.array(
    [[c == "X" for c in row.split()] for row in (
        "X . . . X X X . . X X X X . X X",
        "X X . . . X X X . . X X X X . X",
        "X X X . . . X X X . . X . X X X",
        ". X X X . . X X X X . . X . X X",
        ". . X X X . . X X X X . X X . X",
        ". . . X X X . . X X X X . X X X",
    )],
    dtype=bool,
)


def _head(layers: list, head_activation: str | None) -> list:
    """Append a standalone output activation (softmax, log_softmax, ...) unless None."""
    if head_activation is not None:
        layers.append(Activation(head_activation, name="head"))
    return layers


def _per_layer(value, n: int, what: str, *, list_only: bool = False) -> tuple:
    """One value broadcast to n layers, or exactly n values, one per layer.

    With `list_only`, only a list counts as per-layer (a tuple such as a (3, 3) kernel or a
    ((0, 1), (1, 0)) padding is one value for every layer).
    """
    per_layer = isinstance(value, list) if list_only else (
        not isinstance(value, (str, bytes)) and (isinstance(value, Sequence) or np.ndim(value) > 0))
    if not per_layer:
        return (value,) * n
    if len(value) != n:
        raise ValueError(f"{what} must be one value or a list of {n} values (one per layer), got {len(value)}")
    return tuple(value)


def _mnist_frame_padding(input_shape) -> str:
    """LeNet-style nets expect a 32x32 frame: pad 28x28 digits by 2 ("same" for a 5x5 kernel)."""
    return "same" if tuple(input_shape[:2]) == (28, 28) else "valid"


def ignet_fig5(outputs: int = 10, *, filters: int = 16, kernel=(5, 5), input_shape=(58, 36, 1),
               W=(1.0, 10.0), B=(0.0, 0.0), bias="frozen", activation: str = "identity",
               head_activation: str | None = None) -> Sequential:
    """IgNet paper Fig. 5: the simplest successful net, one conv layer + one fully connected layer.

    Identity activations everywhere (Sec. 5.5.2), Eq. 3 initialisation per layer
    (conv: `ignet(W[0], B[0])`, FC: `ignet(W[1], B[1])`) and biases frozen, as the paper ran
    (Sec. 5.4.2: "not to teach biases at all"). The default amplitudes follow Fig. 4b (the second
    layer's W raised 10x). The paper does not print the filter count or size: 16 filters of 5x5
    (valid) are our choice. `head_activation="softmax"` for classification (the paper puts softmax
    last, with cross-entropy); None for regression (MAE loss, `outputs=1`).
    """
    W = _per_layer(W, 2, "W")
    B = _per_layer(B, 2, "B")
    layers = [
        Conv2D(filters, kernel, padding="valid", bias=bias, activation=activation,
               initializer=ignet(W[0], B[0]), name="conv1"),
        Flatten(name="flatten"),
        Dense(outputs, bias=bias, activation=activation, initializer=ignet(W[1], B[1]), name="fc"),
    ]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def ignet_deep(depth: int, outputs: int = 1, *, filters=8, kernel=(3, 3), padding="valid",
               input_shape=(58, 36, 1), W=None, B=0.0, bias="frozen", activation: str = "identity",
               head_activation: str | None = None) -> Sequential:
    """IgNet paper Fig. 7 family: `depth` layers = (depth - 1) conv layers, then one fully connected.

    The paper tried 2- to 7-layer nets (Sec. 5.5.1) with identity activations, Eq. 3 init and
    frozen biases; it does not print their filter sizes. Our choice: 3x3 "valid" convs with 8
    filters each (a 58x36 input shrinks by 2 per conv, to 46x24 at depth 7), stride 1.
    `filters`, `kernel`, `padding`, `W`, `B` and `activation` may be one value or one per
    layer: `filters` (int or sequence), `kernel` and `padding` (a *list* gives one per conv
    layer; a tuple such as (3, 5) is one value for all) cover the conv layers; `W`, `B` and
    `activation` cover every layer, the FC layer last. Default amplitudes: W = 1 for the convs and 10 for the FC
    layer (as Fig. 4b raised the last layer's), B = 0. depth=1 is a lone FC layer.
    """
    if not isinstance(depth, (int, np.integer)) or not 1 <= depth <= 7:
        raise ValueError(f"ignet_deep: depth must be an int in 1..7, got {depth!r}")
    n_conv = int(depth) - 1
    if W is None:
        W = (1.0,) * n_conv + (10.0,)
    W = _per_layer(W, depth, "W")
    B = _per_layer(B, depth, "B")
    acts = _per_layer(activation, depth, "activation")
    filt = _per_layer(filters, n_conv, "filters")
    kern = _per_layer(kernel, n_conv, "kernel", list_only=True)
    pads = _per_layer(padding, n_conv, "padding", list_only=True)
    layers: list = [
        Conv2D(filt[i], kern[i], padding=pads[i], bias=bias, activation=acts[i],
               initializer=ignet(W[i], B[i]), name=f"conv{i + 1}")
        for i in range(n_conv)
    ]
    layers += [Flatten(name="flatten"),
               Dense(outputs, bias=bias, activation=acts[-1], initializer=ignet(W[-1], B[-1]), name="fc")]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def lenet5(input_shape=(28, 28, 1), classes: int = 10, *, activation: str = "relu",
           head_activation: str | None = "softmax") -> Sequential:
    """LeNet-5 as in the thesis (Sec. 3.6.1, Figs. 12-13): 61,706 parameters for 10 classes.

    conv 6@5x5 - maxpool 2x2/2 - conv 16@5x5 - maxpool 2x2/2 - FC 120 - FC 84 - FC 10 - softmax:
    156 + 2,416 + 48,120 + 10,164 + 850 = 61,706. The thesis feeds 32x32x1 to a valid conv; a
    28x28 input (MNIST as stored) gets a 2-pixel zero border ("same") on the first conv, which
    is the same thing. The thesis names no hidden activation; `activation` defaults to ReLU.
    """
    layers = [
        Conv2D(6, 5, padding=_mnist_frame_padding(input_shape), activation=activation),
        MaxPool(2),
        Conv2D(16, 5, activation=activation),
        MaxPool(2),
        Flatten(),
        Dense(120, activation=activation),
        Dense(84, activation=activation),
        Dense(classes),
    ]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def annt_lenet(input_shape=(32, 32, 1), classes: int = 10, *,
               head_activation: str | None = "log_softmax") -> Sequential:
    """ANNT's MNIST net (seed 001, "MNIST handwritten digits classification"): 51,002 parameters.

    Conv(32x32x1, 5x5x6)-ReLU-AvgPool(2x2), Conv(14x14x6, 5x5x16, LeNet-5 connection table)-ReLU-
    AvgPool(2x2), Conv(5x5x16, 5x5x120)-ReLU, FC(120, 10), log-softmax (train with `losses.nll`).
    The connection table is `LENET5_C3_TABLE` (60 of 96 map pairs: 1,516 parameters in conv2).
    A 28x28 input is zero-padded to the 32x32 frame by the first conv.
    """
    layers = [
        Conv2D(6, 5, padding=_mnist_frame_padding(input_shape), activation="relu"),
        AvgPool(2),
        Conv2D(16, 5, activation="relu", connection_table=LENET5_C3_TABLE),
        AvgPool(2),
        Conv2D(120, 5, activation="relu"),
        Flatten(),
        Dense(classes),
    ]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def _thesis_cnn(input_shape, classes, dropout, head_activation, fast_variance=False) -> Sequential:
    """Ion Petre's CNN from the thesis: 2x [conv-BN, conv-BN, maxpool, dropout], FC 64, dropout, FC."""
    layers = []
    for width in (32, 64):
        layers += [
            Conv2D(width, 3, padding="same", activation="relu"),
            BatchNorm(fast_variance=fast_variance),
            Conv2D(width, 3, padding="same", activation="relu"),
            BatchNorm(fast_variance=fast_variance),
            MaxPool(2),
            Dropout(dropout),
        ]
    layers += [Flatten(), Dense(64, activation="relu"), Dropout(dropout), Dense(classes)]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def thesis_cifar_cnn(classes: int = 10, *, input_shape=(32, 32, 3), dropout: float = 0.25,
                     head_activation: str | None = "softmax", fast_variance: bool = False) -> Sequential:
    """The thesis's CIFAR-10 CNN (Sec. 5.1.2, Fig. 22): 329,194 parameters, 384 non-trainable.

    conv32(3x3 same, ReLU)-BN-conv32-BN-maxpool 2x2-dropout 0.25, conv64-BN-conv64-BN-maxpool-
    dropout 0.25, flatten (8x8x64 = 4,096), FC 64 (ReLU)-dropout 0.25, FC 10-softmax. ReLU sits
    in the conv layers, before batch norm (Keras `Conv2D(activation='relu')` then
    `BatchNormalization()`); the 384 non-trainable parameters are the four BN layers' running
    mean and variance: 2*(2*32) + 2*(2*64). `fast_variance` is passed to every BatchNorm.
    """
    return _thesis_cnn(input_shape, classes, dropout, head_activation, fast_variance)


def thesis_fashion_cnn(classes: int = 10, *, input_shape=(28, 28, 1), dropout: float = 0.25,
                       head_activation: str | None = "softmax", fast_variance: bool = False) -> Sequential:
    """The same thesis CNN on Fashion-MNIST 28x28x1 (Sec. 5.2.2, Fig. 31): 267,178 parameters, 384 non-trainable.

    `fast_variance` is passed to every BatchNorm.
    """
    return _thesis_cnn(input_shape, classes, dropout, head_activation, fast_variance)


def thesis_mlp(input_shape=(32, 32, 3), classes: int = 10, *,
               head_activation: str | None = "softmax") -> Sequential:
    """The thesis's fully connected net (Secs. 5.1.1, 5.2.1): flatten, FC 128-64-32 (ReLU), FC 10-softmax.

    404,010 parameters on 32x32x3 (CIFAR-10), 111,146 on 28x28x1 (Fashion-MNIST).
    """
    layers = [Flatten(), Dense(128, activation="relu"), Dense(64, activation="relu"),
              Dense(32, activation="relu"), Dense(classes)]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def tutorial_cifar_net(classes: int = 10, *, input_shape=(32, 32, 3),
                       head_activation: str | None = "softmax") -> Sequential:
    """The CIFAR-10 tutorial's convnet (seed 004): 631,658 parameters.

    2x conv64, maxpool 2x2, 2x conv32, maxpool 2x2, 2x conv16 (all 3x3 "same", ReLU), flatten
    (8x8x16 = 1,024), FC 512 (ReLU), FC 64 (ReLU), FC 10-softmax.
    """
    layers = []
    for i, width in enumerate((64, 32, 16)):
        layers += [Conv2D(width, 3, padding="same", activation="relu"),
                   Conv2D(width, 3, padding="same", activation="relu")]
        if i < 2:
            layers.append(MaxPool(2))
    layers += [Flatten(), Dense(512, activation="relu"), Dense(64, activation="relu"), Dense(classes)]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def alexnet(classes: int = 1000, *, input_shape=(227, 227, 3), dropout: float = 0.5,
            head_activation: str | None = "softmax") -> Sequential:
    """AlexNet as in the thesis (Sec. 3.6.2, Figs. 14-15): 60,965,224 parameters.

    conv1 96@11x11 stride 4 (ReLU) -> 55x55x96; maxpool 3x3/2 -> 27; conv2 256@5x5 pad 2,
    groups=2 (two halves of 128 filters over 48 maps each) -> 27; maxpool 3x3/2 -> 13; conv3
    384@3x3 pad 1 (not split); conv4 384@3x3 pad 1, groups=2; conv5 256@3x3 pad 1, groups=2;
    maxpool 3x3/2 -> 6x6x256 = 9,216; FC 4096 (ReLU)-dropout 0.5, FC 4096 (ReLU)-dropout 0.5,
    FC 1000-softmax.
    34,944 + 307,456 + 885,120 + 663,936 + 442,624 + 37,752,832 + 16,781,312 + 4,097,000.

    The thesis writes the input as 224x224x3, but 11x11/4 on 224 gives 54, not 55: the
    arithmetic needs 227x227x3 (the default), or 224x224x3 with a (1, 2) zero border on conv1,
    which this constructor uses when given a 224x224 input. Local response normalisation
    (no parameters, not in the thesis) is left out.
    """
    pad1 = ((1, 2), (1, 2)) if tuple(input_shape[:2]) == (224, 224) else "valid"
    layers = [
        Conv2D(96, 11, strides=4, padding=pad1, activation="relu"),
        MaxPool(3, 2),
        Conv2D(256, 5, padding=2, groups=2, activation="relu"),
        MaxPool(3, 2),
        Conv2D(384, 3, padding=1, activation="relu"),
        Conv2D(384, 3, padding=1, groups=2, activation="relu"),
        Conv2D(256, 3, padding=1, groups=2, activation="relu"),
        MaxPool(3, 2),
        Flatten(),
        Dense(4096, activation="relu"),
        Dropout(dropout),
        Dense(4096, activation="relu"),
        Dropout(dropout),
        Dense(classes),
    ]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def keras_drawings_net(outputs: int = 10, task: str = "classification", *, input_shape=(58, 36, 1),
                       filters=(32, 64), kernel=3, hidden: int = 128, conv_dropout: float = 0.25,
                       fc_dropout: float = 0.5) -> Sequential:
    """The IgNet paper's Keras net (Sec. 4, Fig. 2), the baseline IgNet beat.

    Two blocks of [conv - conv - ReLU - maxpool 2x2 - dropout], then two fully connected layers
    with sigmoid activations (dropout on the first), then softmax for classification. The paper
    prints no sizes; our choice: 3x3 valid convs, 32 filters in block 1 and 64 in block 2, ReLU on
    both convs of a block (Keras style), dropout 0.25 after each max-pool, a 128-unit hidden FC
    layer with dropout 0.5. On 58x36x1: 56x34, 54x32, pool 27x16, 25x14, 23x12, pool 11x6x64.
    For regression (`task="regression"`, MSE loss in the paper) the output keeps its sigmoid, so
    the targets must be scaled into (0, 1).
    """
    if task not in ("classification", "regression"):
        raise ValueError(f"keras_drawings_net: task must be 'classification' or 'regression', got {task!r}")
    layers = []
    for width in filters:
        layers += [Conv2D(width, kernel, activation="relu"), Conv2D(width, kernel, activation="relu"),
                   MaxPool(2), Dropout(conv_dropout)]
    layers += [Flatten(), Dense(hidden, activation="sigmoid"), Dropout(fc_dropout),
               Dense(outputs, activation="sigmoid")]
    return Sequential(_head(layers, "softmax" if task == "classification" else None), input_shape=input_shape)


def vgg_small(classes: int = 10, *, input_shape=(32, 32, 3), widths=(32, 64, 128),
              head_activation: str | None = "softmax", fast_variance: bool = False) -> Sequential:
    """A small VGG-style net (our baseline, not from the seeds): 288,746 trainable + 896 non-trainable on 32x32x3.

    Three blocks of 2x [conv 3x3 same (no bias) - batch norm - ReLU], max-pool 2x2 after each,
    widths 32-64-128; then a global average pool (AvgPool over the whole 4x4 map), FC 10.
    `fast_variance` is passed to every BatchNorm.
    """
    layers = []
    for width in widths:
        for _ in range(2):
            layers += [Conv2D(width, 3, padding="same", bias="none"), BatchNorm(fast_variance=fast_variance),
                       Activation("relu")]
        layers.append(MaxPool(2))
    h, w = input_shape[0], input_shape[1]
    for _ in widths:
        h, w = h // 2, w // 2
    layers += [AvgPool((h, w)), Flatten(), Dense(classes)]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


def _resnet_block(width: int, strides: int, in_width: int, shortcut: str, initializer, name: str,
                  fast_variance: bool) -> Residual:
    """He et al.'s basic block: conv 3x3 (stride) - BN - ReLU - conv 3x3 - BN, plus the shortcut, then ReLU."""
    bn = dict(momentum=0.9, epsilon=1e-5, fast_variance=fast_variance)
    body = [Conv2D(width, 3, strides=strides, padding="same", bias="none", initializer=initializer, name="conv1"),
            BatchNorm(**bn, name="bn1"), Activation("relu", name="relu1"),
            Conv2D(width, 3, padding="same", bias="none", initializer=initializer, name="conv2"),
            BatchNorm(**bn, name="bn2")]
    short = None
    if strides != 1 or width != in_width:
        if shortcut == "A":
            short = IdentityShortcut(width, strides, name="shortcut")
        else:
            short = Serial([Conv2D(width, 1, strides=strides, bias="none", initializer=initializer, name="conv"),
                            BatchNorm(**bn, name="bn")], name="shortcut")
    return Residual(body, shortcut=short, activation="relu", name=name)


def resnet20(classes: int = 10, *, input_shape=(32, 32, 3), blocks: int = 3, widths=(16, 32, 64),
             shortcut: str = "A", initializer="he_normal", head_activation: str | None = "softmax",
             fast_variance: bool = False) -> Sequential:
    """ResNet-20 for CIFAR-10 (He et al. 2016, Sec. 4.2): 269,722 trainable + 1,376 non-trainable (0.27M).

    conv 3x3 16 - BN - ReLU, then 3 stages of `blocks` basic blocks (16-32-64 maps; the first
    block of stages 2 and 3 halves the map with stride 2), global average pooling, FC 10. Shortcut
    "A" (the paper's CIFAR choice): identity, subsampled and zero-padded where the shape changes;
    "B": a 1x1 strided conv + BN projection there (272,474 + 1,568). 6 * blocks + 2 layers deep
    (blocks=3: 20; 5: ResNet-32; 9: ResNet-56). Names read `stage2/block1/conv1`.
    `fast_variance` is passed to every BatchNorm.
    """
    if shortcut not in ("A", "B"):
        raise ValueError(f"resnet20: shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {shortcut!r}")
    layers = [Conv2D(widths[0], 3, padding="same", bias="none", initializer=initializer, name="conv1"),
              BatchNorm(momentum=0.9, epsilon=1e-5, fast_variance=fast_variance, name="bn1"),
              Activation("relu", name="relu1")]
    in_width = widths[0]
    for i, width in enumerate(widths, start=1):
        stage = [_resnet_block(width, 2 if (i > 1 and b == 1) else 1, in_width if b == 1 else width, shortcut,
                               initializer, f"block{b}", fast_variance) for b in range(1, blocks + 1)]
        layers.append(Serial(stage, name=f"stage{i}"))
        in_width = width
    layers += [GlobalAvgPool(name="pool"), Dense(classes, initializer=initializer, name="fc")]
    return Sequential(_head(layers, head_activation), input_shape=input_shape)


ZOO: dict[str, Callable[..., Sequential]] = {
    "ignet_fig5": ignet_fig5,
    "ignet_deep": ignet_deep,
    "lenet5": lenet5,
    "annt_lenet": annt_lenet,
    "thesis_cifar_cnn": thesis_cifar_cnn,
    "thesis_fashion_cnn": thesis_fashion_cnn,
    "thesis_mlp": thesis_mlp,
    "tutorial_cifar_net": tutorial_cifar_net,
    "alexnet": alexnet,
    "keras_drawings_net": keras_drawings_net,
    "vgg_small": vgg_small,
    "resnet20": resnet20,
}

__all__ = ["ZOO", "LENET5_C3_TABLE", *ZOO]
