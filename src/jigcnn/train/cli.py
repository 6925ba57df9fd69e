"""`python -m jigcnn.train`: train a zoo net on a named data set, with per-epoch checkpoints and --resume."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from jigcnn.atomic import write_text_atomic

DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits", "drawings")


def load_dataset(name: str, data_dir=None, seed: int = 0):
    """(train, test, classes) for a named data set; drawings: age-category classes of the synthetic stand-in or a real folder."""
    from jigcnn import data

    if name == "mnist":
        return data.load_mnist(data_dir, "train"), data.load_mnist(data_dir, "test"), 10
    if name == "fashion-mnist":
        return data.load_fashion_mnist(data_dir, "train"), data.load_fashion_mnist(data_dir, "test"), 10
    if name == "cifar10":
        return data.load_cifar10(data_dir, "train"), data.load_cifar10(data_dir, "test"), 10
    if name == "digits":
        x, y = data.load_digits(data_dir)
        cut = int(0.8 * len(y))
        return (x[:cut], y[:cut]), (x[cut:], y[cut:]), 10
    if name == "drawings":
        ds = data.load_drawings(data_dir, seed=seed)
        idx, table = data.encode(ds.labels, ("age_category",))
        order = np.random.default_rng(seed).permutation(len(idx))
        cut = int(0.8 * len(idx))
        tr, te = order[:cut], order[cut:]
        return (ds.images[tr], idx[tr]), (ds.images[te], idx[te]), table.n_classes
    raise ValueError(f"--data must be one of {', '.join(DATASETS)}, got {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    from jigcnn.zoo import ZOO

    p = argparse.ArgumentParser(prog="python -m jigcnn.train", description=__doc__)
    p.add_argument("--net", default="lenet5", choices=sorted(ZOO), help="a jigcnn.zoo net (default: lenet5)")
    p.add_argument("--data", default="mnist", choices=DATASETS, help="data set (default: mnist)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $JIGCNN_DATA)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    p.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default: 32, the paper's)")
    p.add_argument("--optimizer", default="adam", help="sgd, momentum, nesterov, adam, adagrad, rmsprop (default: adam)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    p.add_argument("--grad", default="autodiff", choices=("autodiff", "manual"), help="gradient method (default: autodiff)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    p.add_argument("--checkpoint-dir", default=None, help="write a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir's checkpoint")
    p.add_argument("--out", default=None, help="write the final metrics and history as JSON here")
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        print("error: --resume needs --checkpoint-dir", file=sys.stderr)
        return 2
    import jax

    from jigcnn.compile_cache import enable as enable_cache
    from jigcnn.optim import make_optimizer
    from jigcnn.train import fit
    from jigcnn.zoo import ZOO

    if not jax.config.jax_compilation_cache_dir:  # leave a cache set up by the caller (e.g. the tests) alone
        enable_cache()
    train, test, classes = load_dataset(args.data, args.data_dir, args.seed)
    model = ZOO[args.net](input_shape=tuple(train[0].shape[1:]), classes=classes, head_activation=None) \
        if args.net not in ("ignet_fig5", "ignet_deep", "keras_drawings_net") else None
    if model is None:
        print(f"error: --net {args.net} needs its own settings; use the experiments for the IgNet nets", file=sys.stderr)
        return 2
    params, state = model.init(jax.random.key(args.seed))
    optimizer = make_optimizer({"name": args.optimizer, "learning_rate": args.lr})
    config = {k: v for k, v in vars(args).items() if k not in ("resume", "out", "checkpoint_dir", "data_dir", "epochs")}
    result = fit(model, params, state, optimizer, train, test, epochs=args.epochs, batch_size=args.batch_size,
                 key=jax.random.key(args.seed + 1), loss="softmax_cross_entropy", metrics=("accuracy",),
                 checkpoint_dir=args.checkpoint_dir, resume=args.resume, grad_method=args.grad, config=config)
    print(f"{result.stopped_reason}; " + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    if args.out:
        write_text_atomic(args.out, json.dumps({"config": config, "metrics": result.metrics,
                                                "history": result.history.to_dict()}, indent=2))
    return 0
