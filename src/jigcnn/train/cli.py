"""`python -m jigcnn.train`: train a zoo net on a named data set, with per-epoch checkpoints and --resume.

Every argument and output path is checked before the data is loaded (numbers, the optimizer,
--out and --checkpoint-dir writable, a checkpoint there refused without --resume or
--overwrite, --resume refused where there is no checkpoint); the data, labels and shapes are
checked by ``fit`` before its first step. A user error prints one ``error: ...`` line and
exits with status 2 (a diverged run: status 1; another process of a multi-process run lost: status 3);
anything else is a bug and keeps its traceback.

Several processes (``--coordinator HOST:PORT --num-processes N --process-id I``, or the
``JAX_*`` variables, or a Slurm-like scheduler's): :func:`jigcnn.distributed.initialize` is
called first, before any JAX computation; ``fit`` then runs data parallel over every
process's devices (see docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from jigcnn.atomic import write_text_atomic
from jigcnn.errors import UserError

DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits", "drawings")
PROG = "python -m jigcnn.train"
OWN_SETTINGS_NETS = ("ignet_fig5", "ignet_deep", "keras_drawings_net")


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
    raise UserError(f"--data must be one of {', '.join(DATASETS)}, got {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    from jigcnn.zoo import ZOO

    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--net", default="lenet5", choices=sorted(ZOO), help="a jigcnn.zoo net (default: lenet5)")
    p.add_argument("--data", default="mnist", choices=DATASETS, help="data set (default: mnist)")
    p.add_argument("--data-dir", default=None, help="data directory (default: $JIGCNN_DATA)")
    p.add_argument("--epochs", type=int, default=10, help="epochs, >= 1 (default: 10)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="mini-batch size, 1 to the training set's size (default: 32, the paper's)")
    p.add_argument("--optimizer", default="adam", help="sgd, momentum, nesterov, adam, adagrad, rmsprop (default: adam)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate, > 0 (default: 1e-3)")
    p.add_argument("--grad", default="autodiff", choices=("autodiff", "manual"), help="gradient method (default: autodiff)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="write a checkpoint after every epoch here (a folder already holding one is refused "
                        "without --resume or --overwrite)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint-dir's checkpoint (refused when there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint already in --checkpoint-dir (it is removed when training starts)")
    p.add_argument("--out", default=None, help="write the final metrics and history as JSON here (in a multi-process "
                                               "run every process writes its own --out; one path shared by all: "
                                               "process 0 writes it)")
    d = p.add_argument_group("several processes (jigcnn.distributed; default: the JAX_* variables, a Slurm-like "
                             "scheduler's, else one process)")
    d.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="process 0's coordination service address (JAX_COORDINATOR_ADDRESS)")
    d.add_argument("--num-processes", default=None, metavar="N", help="processes in the run, >= 1 (JAX_NUM_PROCESSES)")
    d.add_argument("--process-id", default=None, metavar="I", help="this process's id, 0..N-1 (JAX_PROCESS_ID)")
    d.add_argument("--distributed-timeout", type=float, default=60.0, metavar="S",
                   help="seconds to wait for joining and for the other processes at each check (default: 60)")
    d.add_argument("--heartbeat-timeout", type=float, default=20.0, metavar="S",
                   help="a process of another host silent this long is declared lost (default: 20; on this host a "
                        "dead process is seen at once)")
    return p


DISTRIBUTED_ARGS = ("coordinator", "num_processes", "process_id", "distributed_timeout", "heartbeat_timeout")


def check_args(args) -> None:
    """Every check that needs no data, before the data is loaded; a UserError naming the argument."""
    from jigcnn.optim import optimizer_hyperparameters
    from jigcnn.train import checkpoint as ckpt
    from jigcnn.train import validate

    from jigcnn import distributed

    for flag, value in (("--distributed-timeout", args.distributed_timeout),
                        ("--heartbeat-timeout", args.heartbeat_timeout)):
        if not value > 0 or value == float("inf"):
            raise UserError(f"{flag} must be a number of seconds > 0, got {value!r}")
    distributed.resolve(args.coordinator, args.num_processes, args.process_id)  # the env is read here, not at import
    validate.check_positive_int(args.epochs, "--epochs", "")
    validate.check_positive_int(args.batch_size, "--batch-size", "")
    validate.check_learning_rate(args.lr, "--lr", "")
    try:
        optimizer_hyperparameters(args.optimizer)
    except ValueError as e:
        raise UserError(f"--optimizer: {e}") from None
    if args.net in OWN_SETTINGS_NETS:
        raise UserError(f"--net {args.net} needs its own settings; use the experiments for the IgNet nets")
    if args.resume and not args.checkpoint_dir:
        raise UserError("--resume needs --checkpoint-dir")
    if args.overwrite and not args.checkpoint_dir:
        raise UserError("--overwrite needs --checkpoint-dir")
    if args.overwrite and args.resume:
        raise UserError("--resume and --overwrite contradict each other: continue the checkpoint or replace it")
    if args.out:
        validate.check_writable_file(args.out, "--out")
    if not args.checkpoint_dir:
        return
    folder = args.checkpoint_dir
    validate.check_writable_dir(folder, "--checkpoint-dir")
    latest = os.path.join(folder, ckpt.CHECKPOINT_NAME)
    prev = ckpt.previous_path(latest)
    if args.resume:
        if not os.path.exists(latest) and not os.path.exists(prev):
            what = "does not exist" if not os.path.exists(folder) else f"holds no checkpoint ({latest})"
            raise UserError(f"--resume: --checkpoint-dir {folder} {what}; nothing to resume (check the folder's "
                            f"name, or drop --resume to start a new run)")
        errors = []
        for p in (latest, prev):
            if os.path.exists(p):
                try:
                    ckpt.read_header(p)
                    return
                except ckpt.CheckpointError as e:
                    errors.append(str(e))
        raise UserError("--resume: no readable checkpoint in --checkpoint-dir: " + "; ".join(errors))
    if os.path.exists(latest) and not args.overwrite:
        try:
            what = f"epoch {ckpt.read_header(latest)['meta'].get('epoch')}"
        except (ckpt.CheckpointError, KeyError, TypeError):
            what = "unreadable"
        raise UserError(f"--checkpoint-dir {folder} already holds a checkpoint ({latest}, {what}); refusing to "
                        f"overwrite it: add --resume to continue it, --overwrite to replace it, or choose "
                        f"another folder")


def _user_error_types() -> tuple[type, ...]:
    """The exceptions printed as one line: the project's UserError and the data loaders' DataError."""
    types: list[type] = [UserError]
    try:
        from jigcnn.data.images import DataError

        types.append(DataError)
    except ImportError:  # pragma: no cover - data is part of the package
        pass
    return tuple(types)


def run(args) -> int:
    """Train as ``args`` say (already checked by :func:`check_args`); returns the exit status."""
    from jigcnn import distributed

    # first, before any JAX computation: join the other processes (or stay one)
    me = distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                timeout=args.distributed_timeout, heartbeat_timeout=args.heartbeat_timeout)
    import jax

    from jigcnn.optim import make_optimizer
    from jigcnn.runtime import configure_process
    from jigcnn.train import checkpoint as ckpt
    from jigcnn.train import fit
    from jigcnn.zoo import ZOO

    configure_process()  # the program's choice: allocator, compilation cache (one set up by the caller is kept)
    train, test, classes = load_dataset(args.data, args.data_dir, args.seed)
    model = ZOO[args.net](input_shape=tuple(train[0].shape[1:]), classes=classes, head_activation=None)
    params, state = model.init(jax.random.key(args.seed))
    optimizer = make_optimizer({"name": args.optimizer, "learning_rate": args.lr})
    config = {k: v for k, v in vars(args).items()
              if k not in ("resume", "overwrite", "out", "checkpoint_dir", "data_dir", "epochs") + DISTRIBUTED_ARGS}
    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir and args.overwrite:
        checkpoint_dir = ckpt.overwrite(checkpoint_dir)
    result = fit(model, params, state, optimizer, train, test, epochs=args.epochs, batch_size=args.batch_size,
                 key=jax.random.key(args.seed + 1), loss="softmax_cross_entropy", metrics=("accuracy",),
                 checkpoint_dir=checkpoint_dir, resume=args.resume, grad_method=args.grad, config=config)
    print(f"{result.stopped_reason}; " + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    out = args.out
    if me.multiprocess:  # one --out path given to several processes: process 0 writes it
        paths = distributed.gather_json("--out", os.path.abspath(out) if out else None)
        if me.process_id != 0 and out and os.path.abspath(out) == paths[0]:
            out = None
    if out:
        try:
            write_text_atomic(out, json.dumps({"config": config, "metrics": result.metrics,
                                               "history": result.history.to_dict(),
                                               "processes": me.num_processes}, indent=2))
        except OSError as e:
            where = f"; the checkpoint {args.checkpoint_dir} holds the trained state" if args.checkpoint_dir else ""
            raise UserError(f"could not write --out {args.out}: {e.strerror or e}{where}") from None
    return 0


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0; 1: training diverged; 2: a user error; 3: a process lost)."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return run(args)
    except _user_error_types() as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        from jigcnn.train import DivergenceError

        if not isinstance(e, DivergenceError):
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)  # it names the epoch, step and layers
        return 1
    except RuntimeError as e:
        from jigcnn.distributed import ProcessLostError, exit_lost

        if not isinstance(e, ProcessLostError):
            raise
        exit_lost(e, PROG, 3)  # names the lost process; ends now (JAX's shutdown would wait for the dead peer)
        return 3  # pragma: no cover - exit_lost does not return
