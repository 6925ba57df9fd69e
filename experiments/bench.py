"""Training-step throughput: jigcnn (autodiff, hand-written) against PyTorch (NCHW, channels_last), each in its own process.

``PYTHONPATH=src python -m experiments.bench [--vs-torch] [--nets ignet_fig5,lenet5,...] [--batches 32,256]
[--optimizers sgd,adam] [--contenders autodiff,manual,torch-nchw,torch-channels_last] [--repeats 7]
[--repeat-seconds 0.25] [--quick] [--no-peak] [--gemm-size 2048] [--json PATH] [--startup]
[--startup-nets lenet5,vgg_small,...] [--startup-repeats 3]
[--allocator retain|default] [--no-cache] [--kernels NAME=0|1,...]
[--profile [--profile-steps 5] [--profile-top 25]]``

How it measures (issue 19; docs/performance.md, "How the bench measures"):

* Every contender of a row runs in its own persistent worker process (``python -m experiments.bench
  --worker SPEC``), talking JSON lines over its stdin/stdout: no two thread pools share a process.
  A jigcnn worker calls `jigcnn.runtime.configure_process` first, then builds the model, the
  optimizer and `jigcnn.train.make_train_step` (jitted, params donated); a PyTorch worker sets
  ``torch.set_num_threads(<cores>)`` and builds the same net (eager, NCHW or channels_last,
  `torch.optim`). Both take one first step (compilation included) and report it, measured in-process
  and from the moment the bench launched the process. The workers of a row start one after another
  (each first step measured with the others idle), then each is calibrated and warmed up.
* The timed repeats are interleaved round-robin (A 1, B 1, C 1, ..., A 2, B 2, ...): only one
  worker runs at a time, the others wait on their pipe. Each repeat runs ~``--repeat-seconds`` of
  steps; a worker times its own steps and replies with the wall time.
* Per row and contender: the median samples/s over the repeats, their min-max and IQR, the step
  time, the achieved GFLOP/s and fraction of the machine's best measured GEMM peak, and the row's
  load average before and after. The ratio is jigcnn's best method over the best PyTorch contender.
* FLOPs (`step_flops`): forward = 2 x the multiply-adds of every Conv2D and Dense layer, from the
  layer shapes; a training step = 3 x forward (forward, weight gradient, input gradient), less the
  input gradient of the first layer with parameters (no contender computes it: the data needs none).
  Batch norm, activations, pooling, the loss and the optimizer are not counted.
* The GEMM peak: a float32 n x n matmul (n = ``--gemm-size``) with XLA (jitted `jnp.dot`), NumPy's
  BLAS and PyTorch, each in its own worker process, best of several runs.
* A worker that fails reports its error; the row shows it and goes on with the others.
* ``--profile`` times nothing: it traces each jigcnn contender's step with ``jax.profiler`` in its own
  worker and prints the milliseconds per step of each XLA operation of the optimised program (its HLO
  opcode class, forward or backward pass, output shape) and per class (convolution, dot, the native
  kernels, fusions, copies).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10
MANUAL_LIMIT = 1.25  # the hand-written step may take at most this many times the autodiff step
ONECYCLE_STEPS = 10 ** 6  # the schedules' length: the bench's steps all fall in the warm-up phase


@dataclass(frozen=True)
class NetSpec:
    """A bench net: its input shape and the batch sizes and optimizers of its rows."""

    input_shape: tuple
    batches: tuple
    optimizers: tuple


# the paper's nets (IgNet Fig. 5, LeNet-5) as the earlier benches ran them; the wide nets as their
# experiments train them: experiments/cifar10.py (batch 128, SGD Nesterov 0.9 on a one-cycle schedule
# peaking at 0.1, weight decay 5e-4 on the kernels, every net with fast_variance) and
# experiments/fashion_mnist.py (batch 64, Adam on a one-cycle cosine, peak 2e-3, fast_variance). Every row's loss is
# softmax cross-entropy on integer labels: cifar10's label smoothing (element-wise work on the
# (batch, 10) logits) has no hand-written gradient in jigcnn, so the manual contender could not run it.
NETS = {
    "ignet_fig5": NetSpec((58, 36, 1), (32, 256), ("sgd", "adam")),
    "lenet5": NetSpec((28, 28, 1), (32, 256), ("sgd", "adam")),
    "vgg_small": NetSpec((32, 32, 3), (128,), ("nesterov",)),
    "thesis_cifar_cnn": NetSpec((32, 32, 3), (128,), ("nesterov",)),
    "thesis_fashion_cnn": NetSpec((28, 28, 1), (64,), ("adam-onecycle",)),
    # He et al.'s ResNet-20 (option A shortcuts) as experiments/cifar10.py --net resnet20 trains it
    "resnet20": NetSpec((32, 32, 3), (128,), ("he-sgd",)),
}
OPTIMIZERS = {
    "sgd": "plain SGD, lr 1e-3",
    "adam": "Adam, lr 1e-3",
    "nesterov": "SGD Nesterov 0.9, one-cycle peak 0.1, weight decay 5e-4 on the kernels (experiments/cifar10.py)",
    "adam-onecycle": "Adam, one-cycle cosine peak 2e-3 (experiments/fashion_mnist.py)",
    "he-sgd": "SGD momentum 0.9, lr 0.1 divided by 10 at 50% and 75% of the steps, weight decay 1e-4 on the "
              "kernels (He et al. 2016; experiments/cifar10.py --net resnet20)",
}
JIGCNN_CONTENDERS = ("autodiff", "manual", "plain-autodiff", "plain-manual")
TORCH_CONTENDERS = ("torch-nchw", "torch-channels_last")
CONTENDERS = JIGCNN_CONTENDERS + TORCH_CONTENDERS
GEMM_BACKENDS = ("xla", "numpy", "torch")


# ----------------------------------------------------------------------------------------------
# pure parts: the models' shapes and FLOPs, the schedule, the statistics, the comparison


def build_model(net: str):
    """The jigcnn model (logits out, for softmax cross-entropy) of a bench net."""
    from jigcnn import zoo

    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose from {list(NETS)}")
    if net == "ignet_fig5":
        return zoo.ignet_fig5(CLASSES, head_activation=None)
    if net == "lenet5":
        return zoo.lenet5(NETS[net].input_shape, CLASSES, head_activation=None)
    # the wide nets (vgg_small, the thesis nets, ResNet-20 with option A shortcuts) with the one-pass
    # batch-norm variance, as their experiments train them
    return getattr(zoo, net)(CLASSES, head_activation=None, fast_variance=True)


def step_flops(model) -> dict:
    """Per-sample FLOPs: ``forward`` (2 x multiply-adds of Conv2D/Dense) and ``train`` (3 x, less the first layer's input gradient).

    Inside graph blocks (Serial, Residual, Parallel) every inner Conv2D/Dense counts at its own
    input shape; the shortcuts' subsampling and padding, the sums and concatenations are not counted.
    """
    from jigcnn.layers import Conv2D, Dense
    from jigcnn.layers.graph import Block

    def leaves(layers_and_shapes):  # (layer, input shape) of every non-block layer, in network order
        for layer, shape_in in layers_and_shapes:
            if isinstance(layer, Block):
                yield from leaves((child, cin) for child, cin, _ in layer.child_shapes(shape_in))
            else:
                yield layer, shape_in

    forward = train = 0
    first = True
    for layer, shape_in in leaves(zip(model.layers, model.shapes()[:-1])):
        if isinstance(layer, Conv2D):
            (kh, kw), _, _, _, (ho, wo, co) = layer.geometry(shape_in)
            m = layer.mask(shape_in[-1])
            links = shape_in[-1] * co if m is None else int(m.sum())
            fwd = 2 * ho * wo * kh * kw * links
        elif isinstance(layer, Dense):
            fwd = 2 * int(np.prod(shape_in)) * layer.features
        elif hasattr(layer, "layers"):
            raise NotImplementedError(f"step_flops: nested layer {type(layer).__name__} is not counted")
        else:
            continue
        forward += fwd
        train += fwd * (2 if first else 3)  # forward + weight gradient (+ input gradient)
        first = False
    return {"forward": forward, "train": train}


def flops_per_sample(model) -> int:
    """Training-step FLOPs of one sample (`step_flops`'s ``train``)."""
    return step_flops(model)["train"]


def interleaved_schedule(names, repeats: int) -> list[tuple[int, str]]:
    """The round-robin order of the timed repeats: (0, A), (0, B), ..., (1, A), (1, B), ..."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    return [(r, name) for r in range(repeats) for name in names]


def summarise(batch: int, step_seconds) -> dict:
    """Samples/s of the repeats: median, min, max, quartiles (IQR), and the median step time."""
    sps = sorted(batch / t for t in step_seconds)
    if not sps:
        raise ValueError("summarise: no repeats")
    q1, _, q3 = statistics.quantiles(sps, n=4, method="inclusive") if len(sps) > 1 else (sps[0],) * 3
    return {"median_sps": statistics.median(sps), "min_sps": sps[0], "max_sps": sps[-1],
            "q1_sps": q1, "q3_sps": q3, "median_step_s": statistics.median(step_seconds),
            "samples_sps": [batch / t for t in step_seconds]}


def is_torch(contender: str) -> bool:
    """Whether the contender is a PyTorch one."""
    return contender.startswith("torch-")


def compare(medians: dict) -> dict:
    """jigcnn's best method against the best PyTorch contender, from {contender: median samples/s or None (failed)}.

    The jigcnn side is the best of autodiff/manual (the ``plain-`` variants count only when neither
    ran); returns ``jigcnn_best``, ``torch_best`` (names or None), ``ratio`` (None when a side has
    no result) and ``manual_over_autodiff`` (step-time ratio, None unless both ran).
    """
    ok = {c: v for c, v in medians.items() if v is not None and math.isfinite(v) and v > 0}
    jig = [c for c in ok if not is_torch(c) and not c.startswith("plain-")] or [
        c for c in ok if not is_torch(c)]
    tor = [c for c in ok if is_torch(c)]
    jbest = max(jig, key=ok.get) if jig else None
    tbest = max(tor, key=ok.get) if tor else None
    out = {"jigcnn_best": jbest, "torch_best": tbest,
           "ratio": ok[jbest] / ok[tbest] if jbest and tbest else None, "manual_over_autodiff": None}
    if "manual" in ok and "autodiff" in ok:
        out["manual_over_autodiff"] = ok["autodiff"] / ok["manual"]  # = manual step time / autodiff step time
    return out


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (as `uptime` shows them)."""
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return [float("nan")] * 3


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def torch_available() -> bool:
    """Whether PyTorch is installed (looked up, not imported: it is not a jigcnn dependency)."""
    return importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------------------------
# the workers' side: building a contender, timing steps, the GEMM peak


def _data(net: str, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch,) + tuple(NETS[net].input_shape), dtype=np.float32)
    y = rng.integers(0, CLASSES, batch).astype(np.int32)
    return x, y


def jax_optimizer(name: str):
    """The optax optimizer of a bench optimizer name (the experiments' own for nesterov / adam-onecycle)."""
    import optax

    from jigcnn.optim import make_optimizer, onecycle_sgd

    if name in ("sgd", "adam"):
        return make_optimizer({"name": name, "learning_rate": 1e-3})
    if name == "nesterov":
        return onecycle_sgd(0.1, ONECYCLE_STEPS)
    if name == "adam-onecycle":
        return optax.adam(optax.cosine_onecycle_schedule(ONECYCLE_STEPS, 2e-3, pct_start=0.25))
    if name == "he-sgd":  # experiments.cifar10's recipe for resnet20 (He et al. 2016, Sec. 4.2)
        from jigcnn.optim import step_sgd

        return step_sgd(0.1, ONECYCLE_STEPS, weight_decay=1e-4, nesterov=False)
    raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}")


def _jax_runner(spec: dict):
    from jigcnn.runtime import configure_process

    settings = configure_process(retain_memory=spec["allocator"] == "retain", compilation_cache=spec["cache"])
    import jax

    from jigcnn import ops
    from jigcnn.train import make_train_step

    method = spec["contender"]
    net = spec["net"]
    model = build_model(net)
    params, state = model.init(jax.random.key(spec["seed"]))
    tx = jax_optimizer(spec["optimizer"])
    opt_state = tx.init(params)
    plain = method.startswith("plain-")
    kernels = spec.get("kernels") or {}  # --kernels: switches of jigcnn.ops.Kernels for the fast contenders
    with ops.using(banded_conv=False) if plain else ops.using(**kernels):  # the step captures the configuration
        step = make_train_step(model, "softmax_cross_entropy", tx, grad_method=method.removeprefix("plain-"))
    xn, yn = _data(net, spec["batch"], spec["seed"])
    x, y = jax.device_put(xn), jax.device_put(yn)
    key = jax.random.key(spec["seed"] + 1)
    carry = [params, state, opt_state]

    def run(steps: int) -> float:
        p, s, o = carry
        t0 = time.perf_counter()
        for _ in range(steps):
            p, s, o, _ = step(p, s, o, x, y, key)
        jax.block_until_ready(p)
        seconds = time.perf_counter() - t0
        carry[:] = [p, s, o]
        return seconds

    def hlo_text() -> str:  # the optimised program the profile's operation names come from
        return step.lower(*carry, x, y, key).compile().as_text()

    run.hlo_text = hlo_text
    info = {"jax": jax.__version__, "retains_freed_memory": settings.retains_freed_memory,
            "compilation_cache": settings.compilation_cache is not None}
    return run, info


def _load_jigcnn_allocator():
    """`jigcnn.allocator` loaded from its file alone (the jigcnn package would import JAX into the PyTorch worker)."""
    found = importlib.util.find_spec("jigcnn")
    if found is None or not found.submodule_search_locations:
        return None
    path = os.path.join(list(found.submodule_search_locations)[0], "allocator.py")
    spec = importlib.util.spec_from_file_location("_bench_jigcnn_allocator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_model(net: str):
    """The bench net in PyTorch: the same layers, padding, batch norm (Keras momentum/epsilon), dropout and parameters."""
    from torch import nn

    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose from {list(NETS)}")
    h, w, c = NETS[net].input_shape
    if net == "ignet_fig5":  # identity activations; biases frozen at zero, as jigcnn's bias="frozen"
        conv = nn.Conv2d(c, 16, 5)
        fc = nn.Linear(16 * (h - 4) * (w - 4), CLASSES)
        for b in (conv.bias, fc.bias):
            b.requires_grad_(False)
            b.data.zero_()
        return nn.Sequential(conv, nn.Flatten(), fc)
    if net == "lenet5":
        return nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, CLASSES))

    def bn(width):  # Keras's defaults, as jigcnn's BatchNorm: running = 0.99 running + 0.01 batch, eps 1e-3
        return nn.BatchNorm2d(width, eps=1e-3, momentum=0.01)

    if net == "resnet20":
        return torch_resnet20(c, CLASSES)
    layers, cin = [], c
    if net == "vgg_small":  # 3 x [2 x (conv 3x3 same, no bias - BN - ReLU), maxpool 2], global avg pool, FC
        for width in (32, 64, 128):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), bn(width), nn.ReLU()]
                cin = width
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        return nn.Sequential(*layers, nn.AvgPool2d((h, w)), nn.Flatten(), nn.Linear(cin, CLASSES))
    # thesis CNN: 2 x [conv-ReLU-BN, conv-ReLU-BN, maxpool, dropout 0.25], FC 64 ReLU, dropout, FC 10
    for width in (32, 64):
        layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(), bn(width),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), bn(width), nn.MaxPool2d(2), nn.Dropout(0.25)]
        cin, h, w = width, h // 2, w // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * h * w, 64), nn.ReLU(), nn.Dropout(0.25),
                         nn.Linear(64, CLASSES))


def torch_resnet20(channels: int = 3, classes: int = CLASSES, blocks: int = 3, widths=(16, 32, 64)):
    """`zoo.resnet20` in PyTorch: He et al.'s CIFAR ResNet-20 with option A shortcuts (strided subsample, zero-padded channels).

    Batch norm as zoo.resnet20's (running = 0.9 running + 0.1 batch, eps 1e-5: PyTorch momentum 0.1);
    convs without bias. A stride-2 3x3 conv pads 1 on every side here, where jigcnn's "same" pads 0
    before and 1 after (TensorFlow's rule): the same output shapes and FLOPs, one pixel shifted.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ShortcutA(nn.Module):
        def __init__(self, features, stride):
            super().__init__()
            self.features, self.stride = features, stride

        def forward(self, x):
            sub = x[:, :, ::self.stride, ::self.stride]
            return F.pad(sub, (0, 0, 0, 0, 0, self.features - x.shape[1]))

    class Block(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)
            self.shortcut = ShortcutA(width, stride) if stride != 1 or cin != width else nn.Identity()

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    layers = [nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
              nn.BatchNorm2d(widths[0], eps=1e-5, momentum=0.1), nn.ReLU()]
    cin = widths[0]
    for i, width in enumerate(widths):
        for b in range(blocks):
            layers.append(Block(cin, width, 2 if i > 0 and b == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def torch_param_counts(model) -> tuple[int, int]:
    """(trainable, non-trainable) of a PyTorch net, counted as jigcnn does: frozen parameters and BN running stats are non-trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    running = sum(b.numel() for name, b in model.named_buffers() if name.rsplit(".", 1)[-1] in ("running_mean", "running_var"))
    return trainable, frozen + running


def check_param_counts(net: str, model, expected) -> None:
    """Raise AssertionError unless the PyTorch net's parameter counts equal jigcnn's `model.count_params()`."""
    got = torch_param_counts(model)
    assert got[0] == expected[0], (
        f"{net}: the PyTorch net has {got[0]:,} trainable parameters, jigcnn's {expected[0]:,}")
    assert got[1] == expected[1], (
        f"{net}: the PyTorch net has {got[1]:,} non-trainable values, jigcnn's {expected[1]:,}")


def torch_optimizer(name: str, model):
    """(optimizer, scheduler or None): the `torch.optim` counterpart of `jax_optimizer(name)`."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=1e-3), None
    if name == "adam":
        return torch.optim.Adam(trainable, lr=1e-3), None
    if name == "nesterov":  # decay on the kernels only (conv and linear weights), as onecycle_sgd
        groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": 5e-4},
                  {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=ONECYCLE_STEPS, pct_start=0.25,
                                                        div_factor=10.0, final_div_factor=100.0, cycle_momentum=False)
    if name == "adam-onecycle":  # optax.cosine_onecycle_schedule's defaults: div 25, final div 1e4
        opt = torch.optim.Adam(trainable, lr=2e-3)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=ONECYCLE_STEPS, pct_start=0.25,
                                                        cycle_momentum=False)
    if name == "he-sgd":  # decay on the kernels only, lr / 10 at 50% and 75% of the steps (as experiments.cifar10)
        groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": 1e-4},
                  {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        return opt, torch.optim.lr_scheduler.MultiStepLR(opt, [ONECYCLE_STEPS // 2, 3 * ONECYCLE_STEPS // 4], 0.1)
    raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}")


def _torch_runner(spec: dict):
    retained = False
    if spec["allocator"] == "retain":  # the same allocator setting as the jigcnn workers get
        alloc = _load_jigcnn_allocator()
        retained = bool(alloc and alloc.retain_freed_memory())
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    net = spec["net"]
    model = torch_model(net)
    if spec.get("expect_params") is not None:
        check_param_counts(net, model, spec["expect_params"])
    model.train()  # batch statistics, dropout on: as jigcnn's train step
    channels_last = spec["contender"] == "torch-channels_last"
    xn, yn = _data(net, spec["batch"], spec["seed"])
    x = torch.from_numpy(np.ascontiguousarray(xn.transpose(0, 3, 1, 2)))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(yn.astype(np.int64))
    opt, sched = torch_optimizer(spec["optimizer"], model)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if sched is not None:
                sched.step()
        return time.perf_counter() - t0

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "retains_freed_memory": retained,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    return run, info


def gemm_gflops(backend: str, n: int = 2048, repeats: int = 7, threads: int | None = None) -> float:
    """Measured float32 n x n matmul rate (GFLOP/s, best of `repeats`) with XLA, NumPy's BLAS or PyTorch, in this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), np.float32)
    b = rng.standard_normal((n, n), np.float32)
    if backend == "xla":
        import jax
        import jax.numpy as jnp

        a, b = jnp.asarray(a), jnp.asarray(b)
        f = jax.jit(jnp.dot)

        def one():
            f(a, b).block_until_ready()
    elif backend == "numpy":
        def one():
            np.dot(a, b)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads or cores())
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def one():
            torch.mm(ta, tb)
    else:
        raise ValueError(f"unknown GEMM backend {backend!r}; choose from {list(GEMM_BACKENDS)}")
    one()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def worker_main(spec_json: str) -> int:
    """A worker process's loop: build the contender, report the first step, then answer "time N steps" until "exit"."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol

    def send(msg: dict) -> None:
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    try:
        spec = json.loads(spec_json)
        t0 = time.perf_counter()
        if spec["kind"] == "gemm":
            send({"ready": True, "gflops": gemm_gflops(spec["backend"], spec["n"], spec["repeats"], spec["threads"]),
                  "n": spec["n"]})
            run = None
        elif spec["kind"] == "profile":
            send({"ready": True, **profile_worker(spec)})
            run = None
        else:
            run, info = (_torch_runner if is_torch(spec["contender"]) else _jax_runner)(spec)
            setup = time.perf_counter() - t0
            first = run(1)
            send({"ready": True, "setup_s": setup, "first_step_s": first, "first_step_epoch": time.time(),
                  "info": info})
    except BaseException as e:  # noqa: BLE001 -- every failure is reported to the bench, which goes on
        send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]})
        return 1
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("cmd") == "exit":
            break
        if msg.get("cmd") == "time" and run is not None:
            try:
                send({"seconds": run(int(msg["steps"]))})
            except BaseException as e:  # noqa: BLE001
                send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]})
                return 1
        else:
            send({"error": f"unknown request {msg!r}"})
    return 0


# ----------------------------------------------------------------------------------------------
# the bench's side: workers, rows, the peak


class WorkerError(RuntimeError):
    """A worker reported an error, died, or did not answer in time."""


def worker_command(spec: dict) -> list[str]:
    """The command line that starts a worker process for `spec`."""
    return [sys.executable, "-m", "experiments.bench", "--worker", json.dumps(spec)]


def worker_env(spec: dict) -> dict:
    """The worker's environment: jigcnn and experiments importable; PyTorch's OpenMP threads wait passively."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "src"), ROOT] + (
        [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if spec.get("kind") == "gemm" and spec.get("backend") == "torch" or is_torch(spec.get("contender", "")):
        # OpenMP's default spin-waiting keeps burning a core after each call (measured 10-20x slower on a
        # busy 2-core machine); passive waiting is PyTorch's best case here, and it leaves the other
        # workers alone while this one idles (set before torch is imported)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


class Worker:
    """One worker process: JSON lines to its stdin, from its stdout; its stderr kept for error reports."""

    def __init__(self, spec: dict):
        self.spec = spec
        self._stderr = tempfile.TemporaryFile()
        self._buf = b""
        self.spawn_epoch = time.time()
        self.proc = subprocess.Popen(worker_command(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, bufsize=0, cwd=ROOT, env=worker_env(spec))

    def stderr_tail(self, lines: int = 6) -> str:
        """The last lines the worker wrote to stderr."""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def recv(self, timeout: float) -> dict:
        """The worker's next message; WorkerError if it reports an error, exits or stays silent `timeout` s."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=10)
                    tail = self.stderr_tail()
                    raise WorkerError(f"worker exited (code {self.proc.returncode})" + (f": {tail}" if tail else ""))
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        if "error" in msg:
            raise WorkerError(msg["error"])
        return msg

    def request(self, msg: dict, timeout: float) -> dict:
        """Send one request and wait for its answer."""
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        except (BrokenPipeError, OSError) as e:
            raise WorkerError(f"worker gone ({e})") from None
        return self.recv(timeout)

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within a few seconds."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "exit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def gemm_peak(n: int = 2048, repeats: int = 7, backends=GEMM_BACKENDS, timeout: float = 300) -> dict:
    """The float32 GEMM rate of each backend, each measured in its own worker process; and the best of them."""
    out = {"n": n, "repeats": repeats, "gflops": {}, "errors": {}}
    for backend in backends:
        w = Worker({"kind": "gemm", "backend": backend, "n": n, "repeats": repeats, "threads": cores()})
        try:
            out["gflops"][backend] = w.recv(timeout)["gflops"]
        except WorkerError as e:
            out["errors"][backend] = str(e)
        finally:
            w.close()
    ok = out["gflops"]
    out["best_backend"] = max(ok, key=ok.get) if ok else None
    out["best_gflops"] = ok[out["best_backend"]] if ok else None
    return out


def run_row(net: str, batch: int, optimizer: str, contenders, *, repeats: int = 7, target_s: float = 0.25,
            allocator: str = "retain", cache: bool = True, peak_gflops: float | None = None, seed: int = 0,
            timeout: float = 900, kernels: dict | None = None) -> dict:
    """One (net, batch, optimizer) row: each contender in its own worker, timed round-robin; medians, spreads, ratio."""
    model = build_model(net)
    flops = step_flops(model)
    counts = model.count_params()
    row = {"net": net, "batch": batch, "optimizer": optimizer, "repeats": repeats, "repeat_seconds": target_s,
           "forward_flops_per_sample": flops["forward"], "train_flops_per_sample": flops["train"],
           "params": {"trainable": counts[0], "non_trainable": counts[1]}, "load_before": load_average(),
           "contenders": {}}
    res = row["contenders"]
    workers = {}
    for c in contenders:  # one at a time: each first step is measured with the other workers idle
        res[c] = {"error": None, "step_s": []}
        spec = {"kind": "train", "contender": c, "net": net, "batch": batch, "optimizer": optimizer, "seed": seed,
                "allocator": allocator, "cache": cache, "threads": cores(),
                "expect_params": list(counts) if is_torch(c) else None, "kernels": kernels}
        w = Worker(spec)
        try:
            ready = w.recv(timeout)
        except WorkerError as e:
            res[c]["error"] = str(e)
            w.close()
            continue
        res[c].update(setup_s=ready["setup_s"], first_step_s=ready["first_step_s"],
                      first_step_from_spawn_s=ready["first_step_epoch"] - w.spawn_epoch, info=ready["info"])
        workers[c] = w
    steps = {}
    for c, w in list(workers.items()):  # calibrate (2 steps), then one untimed warm-up repeat
        try:
            per = w.request({"cmd": "time", "steps": 2}, timeout)["seconds"] / 2
            steps[c] = max(2, math.ceil(target_s / max(per, 1e-6)))
            w.request({"cmd": "time", "steps": steps[c]}, timeout)
        except WorkerError as e:
            res[c]["error"] = str(e)
            workers.pop(c).close()
    for _, c in interleaved_schedule(list(workers), repeats):
        if c not in workers:  # failed in an earlier repeat
            continue
        try:
            reply = workers[c].request({"cmd": "time", "steps": steps[c]}, max(60.0, 50 * target_s))
            res[c]["step_s"].append(reply["seconds"] / steps[c])
        except WorkerError as e:
            res[c]["error"] = str(e)
            workers.pop(c).close()
    for w in workers.values():
        w.close()
    row["load_after"] = load_average()
    for c, r in res.items():
        r["steps_per_repeat"] = steps.get(c)
        if r["error"] is None and r["step_s"]:
            r.update(summarise(batch, r["step_s"]))
            r["gflops"] = flops["train"] * r["median_sps"] / 1e9
            r["peak_fraction"] = r["gflops"] / peak_gflops if peak_gflops else None
    row.update(compare({c: r.get("median_sps") for c, r in res.items()}))
    return row


# ----------------------------------------------------------------------------------------------
# --profile: where one jigcnn contender's training step spends its time, operation by operation

# the XLA operation classes of a profile (by HLO opcode); "native" are jigcnn's C++ kernels (custom calls).
# A "control" operation (conditional, loop, call) is listed, but its time, which includes the operations
# of its branches or body, is left out of the per-class sums.
OP_CLASSES = ("convolution", "dot", "native", "fusion", "copy", "other")
_HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%?([A-Za-z_][\w.\-]*)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_instructions(text: str) -> dict:
    """{instruction name: {"opcode", "class", "jax_op", "reverse", "shape"}} of an optimised HLO module's text.

    ``jax_op``: the JAX operation the instruction came from (the last part of its metadata's op_name, "" without
    one); ``reverse``: it came from a transpose, i.e. autodiff's reverse mode (a hand-written backward is
    traced code like the forward pass, so its operations are not marked). XLA keeps no metadata on some
    operations it rewrites (a convolution's weight gradient, for one): their ``jax_op`` is "".
    """
    out = {}
    for line in text.splitlines():
        m = _HLO_LINE.match(line)
        if not m:
            continue
        name, opcode = m.groups()
        rhs = line.split("=", 1)[1].strip()
        if rhs.startswith("("):  # a tuple type: up to its closing parenthesis
            depth = 0
            for i, ch in enumerate(rhs):
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth == 0:
                    break
            shape = rhs[:i + 1]
        else:
            shape = rhs.split(" ")[0]
        meta = _OP_NAME.search(line)
        op_name = meta.group(1) if meta else ""
        cls = {"convolution": "convolution", "dot": "dot", "custom-call": "native", "fusion": "fusion",
               "copy": "copy", "transpose": "copy", "conditional": "control", "while": "control",
               "call": "control"}.get(opcode, "other")
        out[name] = {"opcode": opcode, "class": cls, "shape": shape, "jax_op": op_name.rsplit("/", 1)[-1],
                     "reverse": "transpose(" in op_name}
    return out


def trace_ops(events, instructions: dict, steps: int) -> dict:
    """{operation: {"ms", "calls"}} per step from a profiler trace's events, for the names in `instructions`.

    A synchronous operation's time is its events' duration; an asynchronous one (XLA:CPU runs convolutions
    so) logs a start event NAME and an "end: NAME" event, and its time is from the start of the one to
    the end of the other. Asynchronous operations may overlap each other and the synchronous ones, so
    the times can add up to more than the step.
    """
    starts, ends, durations = {}, {}, {}
    for e in events:
        if e.get("ph") != "X" or "ts" not in e:
            continue
        name = e.get("name", "")
        if name.startswith("end: ") and name[5:] in instructions:
            ends.setdefault(name[5:], []).append(float(e["ts"]) + float(e.get("dur", 0.0)))
        elif name in instructions:
            starts.setdefault(name, []).append(float(e["ts"]))
            durations.setdefault(name, []).append(float(e.get("dur", 0.0)))
    out = {}
    for name, ts in starts.items():
        if name in ends and len(ends[name]) == len(ts):
            micros = sum(b - a for a, b in zip(sorted(ts), sorted(ends[name])))
        else:
            micros = sum(durations[name])
        out[name] = {"ms": micros / 1000 / steps, "calls": len(ts) / steps}
    return out


def profile_worker(spec: dict) -> dict:
    """In a worker: compile the contender's step, time `spec["steps"]` steps untraced, then trace as many and summarise."""
    import glob
    import gzip

    run, info = _jax_runner(spec)
    first = run(1)
    run(2)
    steps = spec["steps"]
    untraced = [run(1) for _ in range(steps)]
    import jax

    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            traced = run(steps)
        found = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
        if not found:
            raise RuntimeError(f"jax.profiler.trace wrote no perfetto trace under {d}")
        with gzip.open(found[0], "rt") as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    instructions = hlo_instructions(run.hlo_text())
    ops = trace_ops(events, instructions, steps)
    rows = sorted(({"name": n, **instructions[n], **v} for n, v in ops.items()), key=lambda r: -r["ms"])
    by_class = {c: sum(r["ms"] for r in rows if r["class"] == c) for c in OP_CLASSES}
    return {"first_step_s": first, "step_s": statistics.median(untraced), "traced_step_s": traced / steps,
            "steps": steps, "ops": rows, "ms_by_class": by_class, "info": info}


def profile_row(net: str, batch: int, optimizer: str, contender: str, *, steps: int = 5, allocator: str = "retain",
                cache: bool = True, seed: int = 0, timeout: float = 900, kernels: dict | None = None) -> dict:
    """The profile of one jigcnn contender's step in its own worker process (see `profile_worker`)."""
    spec = {"kind": "profile", "contender": contender, "net": net, "batch": batch, "optimizer": optimizer,
            "seed": seed, "allocator": allocator, "cache": cache, "threads": cores(), "kernels": kernels,
            "steps": steps}
    row = {"net": net, "batch": batch, "optimizer": optimizer, "contender": contender, "kernels": kernels,
           "load_before": load_average(), "error": None}
    w = Worker(spec)
    try:
        msg = w.recv(timeout)
        msg.pop("ready", None)
        row.update(msg)
    except WorkerError as e:
        row["error"] = str(e)
    finally:
        w.close()
    row["load_after"] = load_average()
    return row


def format_profile(row: dict, top: int = 25) -> str:
    """A profile as text: the step time, ms per operation class, and the `top` operations by time."""
    head = (f"profile: {row['net']}, batch {row['batch']}, {row['optimizer']}, {row['contender']}"
            + (f", kernels {row['kernels']}" if row.get("kernels") else "")
            + f"; load average {row['load_before'][0]:.2f} before, {row['load_after'][0]:.2f} after")
    if row["error"]:
        return f"{head}\n  FAILED: {row['error']}"
    total = sum(row["ms_by_class"].values())
    lines = [head, f"  step {row['step_s'] * 1e3:.1f} ms untraced (median of {row['steps']}), "
                   f"{row['traced_step_s'] * 1e3:.1f} ms traced; operations' times add up to {total:.1f} ms "
                   "(asynchronous ones overlap; control operations, which contain others, not counted)",
             "  by class: " + ", ".join(f"{c} {ms:.1f}" for c, ms in row["ms_by_class"].items() if ms > 0) + " ms",
             f"  {'ms/step':>8} {'calls':>5}  {'class':<11} {'operation':<30} {'from (R: reverse mode)':<28} output"]
    for r in row["ops"][:top]:
        src = ("R " if r["reverse"] else "") + r["jax_op"]
        lines.append(f"  {r['ms']:8.2f} {r['calls']:5.1f}  {r['class']:<11} {r['name']:<30} {src[:28]:<28} {r['shape']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# start-up


_STARTUP_CODE = r"""
import time, sys
t0 = time.perf_counter()
sys.path.insert(0, "src")
import jax, jax.numpy as jnp, numpy as np
from jigcnn import compile_cache
if {cache!r}:
    compile_cache.enable({cache!r})
from experiments.bench import _data, build_model, jax_optimizer
from jigcnn.train import make_train_step
model = build_model({net!r})
params, state = model.init(jax.random.key(0))
tx = jax_optimizer({optimizer!r})
opt = tx.init(params)
step = make_train_step(model, "softmax_cross_entropy", tx)
x, y = _data({net!r}, {batch!r})
t1 = time.perf_counter()
p, s, o, m = step(params, state, opt, x, y, jax.random.key(1))
jax.block_until_ready(p)
t2 = time.perf_counter()
print("STARTUP", t1 - t0, t2 - t1, time.time())
"""


def startup(cache_dir: str | None = None, net: str = "lenet5") -> dict:
    """Process start to the first training step of bench net ``net``, measured around a fresh `python -c` subprocess.

    The step is the net's first bench row (batch and optimizer; LeNet-5: batch 32, plain SGD), autodiff,
    XLA's "auto" options, the process left as it starts (no `configure_process`).
    `process_to_first_step_s`: from just before the process is launched until its first jitted
    step is done (the child reports the wall-clock time then); `process_wall_s` adds the
    interpreter's exit. Also the in-process set-up time (imports, model, init) and the first
    jitted step (compilation included, or loaded from the persistent cache when `cache_dir`).
    """
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose from {list(NETS)}")
    spec = NETS[net]
    code = _STARTUP_CODE.format(cache=cache_dir or "", net=net, batch=spec.batches[0], optimizer=spec.optimizers[0])
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", "src")
    t0_epoch = time.time()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("STARTUP")][-1].split()
    return {"net": net, "batch": spec.batches[0], "optimizer": spec.optimizers[0], "cache": bool(cache_dir),
            "process_to_first_step_s": float(line[3]) - t0_epoch,
            "process_wall_s": wall, "setup_s": float(line[1]), "first_step_s": float(line[2])}


# ----------------------------------------------------------------------------------------------
# reporting and the command line


def _fmt(v, spec: str, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def format_row(row: dict) -> str:
    """The per-contender block of one row: median (min-max, IQR) samples/s, GFLOP/s, % of peak, first step; the ratio."""
    la, lb = row["load_before"], row["load_after"]
    lines = [f"{row['net']}, batch {row['batch']}, {row['optimizer']}: train step "
             f"{row['train_flops_per_sample'] * row['batch'] / 1e9:.3f} GFLOP; load average {la[0]:.2f} before, "
             f"{lb[0]:.2f} after (1 min)",
             f"  {'contender':<21} {'samples/s median':>16} {'(min-max)':>19} {'IQR':>17} {'ms/step':>8} "
             f"{'GFLOP/s':>8} {'%peak':>6} {'first step s (in-process / from spawn)':>39}"]
    for c, r in row["contenders"].items():
        if r.get("error") is not None:
            lines.append(f"  {c:<21} error: {r['error'].splitlines()[0][:150] if r['error'] else ''}")
            continue
        pf = r.get("peak_fraction")
        span = f"{r['min_sps']:,.0f}-{r['max_sps']:,.0f}"
        iqr = f"{r['q1_sps']:,.0f}-{r['q3_sps']:,.0f}"
        lines.append(
            f"  {c:<21} {r['median_sps']:>16,.0f} {span:>19} "
            f"{iqr:>17} {1e3 * r['median_step_s']:>8.2f} {r['gflops']:>8.1f} "
            f"{_fmt(None if pf is None else 100 * pf, '.0f'):>6} "
            f"{r['first_step_s']:>20.2f} / {r['first_step_from_spawn_s']:.2f}")
    if row["ratio"] is not None:
        lines.append(f"  jigcnn's best ({row['jigcnn_best']}) / PyTorch's best ({row['torch_best']}): {row['ratio']:.2f}x")
    if row["manual_over_autodiff"] is not None:
        lines.append(f"  hand-written / autodiff step time: {row['manual_over_autodiff']:.2f}")
    return "\n".join(lines)


def format_table(rows: list[dict], contenders) -> str:
    """The summary: one line per row, the median samples/s of each contender, the ratio and % of peak."""
    head = ["net", "batch", "opt", *contenders, "jig/torch", "%peak (jig best)", "load before/after"]
    lines = [" | ".join(head)]
    for r in rows:
        cells = [r["net"], str(r["batch"]), r["optimizer"]]
        for c in contenders:
            x = r["contenders"].get(c, {})
            cells.append("error" if x.get("error") else _fmt(x.get("median_sps"), ",.0f"))
        best = r["contenders"].get(r["jigcnn_best"], {}) if r["jigcnn_best"] else {}
        pf = best.get("peak_fraction")
        cells += [_fmt(r["ratio"], ".2f"), _fmt(None if pf is None else 100 * pf, ".0f"),
                  f"{r['load_before'][0]:.1f}/{r['load_after'][0]:.1f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def parse_kernels(text: str) -> dict:
    """``"winograd=0,pool=1"`` -> {"winograd": False, "pool": True} (switches of `jigcnn.ops.Kernels`)."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if value not in ("0", "1"):
            raise SystemExit(f"--kernels: {item!r} is not NAME=0 or NAME=1")
        out[name.strip()] = value == "1"
    return out


def parse_choices(flag: str, text: str, choices) -> list[str]:
    """A comma-separated list of names, each one of `choices`; ValueError naming `flag` and the bad value."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"{flag}: empty list {text!r}; choose from {list(choices)}")
    for n in names:
        if n not in choices:
            raise ValueError(f"{flag}: unknown value {n!r}; choose from {list(choices)}")
    return names


def parse_batches(text: str) -> list[int]:
    """A comma-separated list of positive batch sizes; ValueError naming --batches and the bad value."""
    out = []
    for t in (t.strip() for t in text.split(",")):
        if not t:
            continue
        try:
            b = int(t)
        except ValueError:
            b = 0
        if b < 1:
            raise ValueError(f"--batches: {t!r} is not a positive integer")
        out.append(b)
    if not out:
        raise ValueError(f"--batches: empty list {text!r}")
    return out


def rows_to_run(nets, batches=None, optimizers=None) -> list[tuple[str, int, str]]:
    """The (net, batch, optimizer) rows: each net's own batches and optimizers unless overridden."""
    return [(n, b, o) for n in nets for b in (batches or NETS[n].batches) for o in (optimizers or NETS[n].optimizers)]


def main(argv=None) -> dict:
    """Run the bench from the command line (see the module docstring); return the results."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS), help=f"comma-separated, from {','.join(NETS)}")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default: each net's own)")
    ap.add_argument("--optimizers", default=None,
                    help=f"comma-separated, from {','.join(OPTIMIZERS)} (default: each net's own)")
    ap.add_argument("--contenders", default=None,
                    help=f"comma-separated, from {','.join(CONTENDERS)} (default autodiff,manual, "
                         "and the PyTorch ones with --vs-torch); plain-*: jigcnn without its fast kernels")
    ap.add_argument("--methods", default=None, help="the jigcnn contenders (the earlier bench's flag; "
                    "--vs-torch adds the PyTorch ones)")
    ap.add_argument("--vs-torch", action="store_true", help="also time PyTorch eager CPU, NCHW and channels_last")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per contender (median reported)")
    ap.add_argument("--repeat-seconds", type=float, default=0.25, help="seconds of steps per repeat (about)")
    ap.add_argument("--quick", action="store_true", help="3 repeats of ~0.05 s, a 512x512 GEMM peak")
    ap.add_argument("--no-peak", action="store_true", help="do not measure the GEMM peak")
    ap.add_argument("--gemm-size", type=int, default=2048, help="n of the n x n float32 GEMM peak")
    ap.add_argument("--worker-timeout", type=float, default=900, help="seconds a worker may take to answer")
    ap.add_argument("--startup", action="store_true",
                    help="also measure process start to the first training step (empty, then warm cache)")
    ap.add_argument("--startup-nets", default="lenet5", metavar="NETS",
                    help=f"the nets of --startup, comma-separated from {','.join(NETS)} (default lenet5)")
    ap.add_argument("--startup-repeats", type=int, default=3, metavar="N",
                    help="warm-cache start-up processes to time (default 3)")
    ap.add_argument("--no-cache", action="store_true", help="the jigcnn workers leave the persistent compilation cache off")
    ap.add_argument("--allocator", choices=("retain", "default"), default="retain",
                    help="retain: glibc malloc keeps freed memory (jigcnn.allocator, as the experiments run), in "
                         "every worker, PyTorch's too; default: glibc's defaults")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON (atomically)")
    ap.add_argument("--kernels", default="", metavar="NAME=0|1,...",
                    help="jigcnn.ops.Kernels switches for the jigcnn contenders, e.g. winograd=0")
    ap.add_argument("--profile", action="store_true",
                    help="instead of timing the rows, profile each jigcnn contender's step (jax.profiler, its own "
                         "process): ms per XLA operation")
    ap.add_argument("--profile-steps", type=int, default=5, metavar="N", help="steps traced per profile (default 5)")
    ap.add_argument("--profile-top", type=int, default=25, metavar="N", help="operations printed per profile")
    args = ap.parse_args(argv)
    kernels = parse_kernels(args.kernels)
    try:
        nets = parse_choices("--nets", args.nets, NETS)
        startup_nets = parse_choices("--startup-nets", args.startup_nets, NETS)
        batches = parse_batches(args.batches) if args.batches is not None else None
        opts = parse_choices("--optimizers", args.optimizers, OPTIMIZERS) if args.optimizers is not None else None
        if args.contenders is not None and args.methods is not None:
            raise ValueError(f"--methods {args.methods!r} and --contenders {args.contenders!r}: give one of them")
        if args.contenders is not None:
            contenders = parse_choices("--contenders", args.contenders, CONTENDERS)
        else:
            jig = parse_choices("--methods", args.methods, JIGCNN_CONTENDERS) if args.methods else ["autodiff", "manual"]
            contenders = jig + (list(TORCH_CONTENDERS) if args.vs_torch else [])
    except ValueError as e:
        ap.error(str(e))
    for flag, value, ok, rule in (("--repeats", args.repeats, args.repeats >= 1, "at least 1"),
                                  ("--repeat-seconds", args.repeat_seconds, args.repeat_seconds > 0, "positive"),
                                  ("--gemm-size", args.gemm_size, args.gemm_size >= 16, "at least 16"),
                                  ("--worker-timeout", args.worker_timeout, args.worker_timeout > 0, "positive"),
                                  ("--startup-repeats", args.startup_repeats, args.startup_repeats >= 1, "at least 1"),
                                  ("--profile-steps", args.profile_steps, args.profile_steps >= 1, "at least 1"),
                                  ("--profile-top", args.profile_top, args.profile_top >= 1, "at least 1")):
        if not ok:
            ap.error(f"{flag} must be {rule}, got {value}")
    if args.profile:
        if args.vs_torch or any(is_torch(c) for c in contenders):
            ap.error("--profile profiles jigcnn's contenders only (autodiff, manual, plain-*); "
                     f"got {','.join(contenders)}{' and --vs-torch' if args.vs_torch else ''}")
        return profile_main(args, nets, batches, opts, contenders, kernels, argv)
    if args.vs_torch and args.contenders is not None and not any(is_torch(c) for c in contenders):
        contenders += list(TORCH_CONTENDERS)
    if any(is_torch(c) for c in contenders) and not torch_available():
        print("PyTorch is not installed (it is not a jigcnn dependency); install it by hand (pip install torch) "
              "to compare. Timing jigcnn alone.", file=sys.stderr)
        contenders = [c for c in contenders if not is_torch(c)]
    repeats, target, gemm_n, gemm_reps = ((3, 0.05, 512, 3) if args.quick
                                          else (args.repeats, args.repeat_seconds, args.gemm_size, 7))

    print(f"{cores()} cores; load average {load_average()}; allocator: {args.allocator}; contenders: "
          f"{', '.join(contenders)}; {repeats} repeats of ~{target} s each, interleaved", flush=True)
    peak = None
    if not args.no_peak:
        backends = [b for b in GEMM_BACKENDS if b != "torch" or torch_available()]
        peak = gemm_peak(gemm_n, gemm_reps, backends, timeout=args.worker_timeout)
        print(f"float32 GEMM peak ({gemm_n}x{gemm_n}, best of {gemm_reps}, each backend in its own process): "
              + ", ".join(f"{b} {g:.1f}" for b, g in peak["gflops"].items()) + " GFLOP/s"
              + "".join(f"; {b} failed: {e}" for b, e in peak["errors"].items()), flush=True)
    best_peak = peak["best_gflops"] if peak else None
    rows = []
    for net, batch, opt in rows_to_run(nets, batches, opts):
        r = run_row(net, batch, opt, contenders, repeats=repeats, target_s=target, allocator=args.allocator,
                    cache=not args.no_cache, peak_gflops=best_peak, timeout=args.worker_timeout, kernels=kernels)
        rows.append(r)
        print(format_row(r), flush=True)
    print()
    print(format_table(rows, contenders))
    for r in rows:
        if r["manual_over_autodiff"] is not None and r["manual_over_autodiff"] > MANUAL_LIMIT:
            print(f"WARNING: {r['net']} batch {r['batch']} {r['optimizer']}: hand-written step is "
                  f"{r['manual_over_autodiff']:.2f}x the autodiff step (limit {MANUAL_LIMIT})")
    result = {"command": ["experiments.bench", *(sys.argv[1:] if argv is None else argv)], "cores": cores(),
              "allocator": args.allocator, "contenders": contenders, "optimizers": OPTIMIZERS,
              "flops": "forward = 2 x multiply-adds of Conv2D/Dense; train = 3 x forward less the first "
                       "parametrised layer's input gradient",
              "gemm_peak": peak, "rows": rows}
    if args.startup:
        result["startup"] = {}
        for net in startup_nets:
            with tempfile.TemporaryDirectory() as d:  # each net its own empty cache
                cold = startup(d, net)
                warm = [startup(d, net) for _ in range(args.startup_repeats)]
            result["startup"][net] = {"cold_cache": cold, "warm_cache": warm}
            for name, runs in (("empty cache", [cold]), ("warm cache", warm)):
                for s in runs:
                    print(f"start-up ({name}): process start to first {net} step (batch {s['batch']}, "
                          f"{s['optimizer']}) {s['process_to_first_step_s']:.2f} s (imports+model+init "
                          f"{s['setup_s']:.2f} s, first jitted step {s['first_step_s']:.2f} s; process exit at "
                          f"{s['process_wall_s']:.2f} s)", flush=True)
    result["load_avg_end"] = load_average()
    print(f"load average at the end: {result['load_avg_end']}")
    if args.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))
    return result


def profile_main(args, nets, batches, opts, contenders, kernels, argv) -> dict:
    """`--profile`: each (row, jigcnn contender) profiled in its own worker, printed, written with --json."""
    print(f"{cores()} cores; load average {load_average()}; profiling {', '.join(contenders)}, "
          f"{args.profile_steps} traced steps each", flush=True)
    profiles = []
    for net, batch, opt in rows_to_run(nets, batches, opts):
        for c in contenders:
            r = profile_row(net, batch, opt, c, steps=args.profile_steps, allocator=args.allocator,
                            cache=not args.no_cache, timeout=args.worker_timeout, kernels=kernels)
            profiles.append(r)
            print(format_profile(r, args.profile_top), flush=True)
    result = {"command": ["experiments.bench", *(sys.argv[1:] if argv is None else argv)], "cores": cores(),
              "allocator": args.allocator, "profiles": profiles, "load_avg_end": load_average()}
    if args.json:
        from jigcnn.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    main()
