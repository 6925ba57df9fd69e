"""The epoch loop: shuffled mini-batches, evaluation, progress bar, checkpoints and resume.

What happens after each epoch (history record, divergence, stopping, restore-best, diagnostic,
checkpoint contents) is :func:`jigcnn.train.epochs.after_epoch`, shared with
:func:`jigcnn.train.fit_folds_vmapped`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jigcnn import distributed
from jigcnn.errors import UserError
from jigcnn.grad import resolve_loss
from jigcnn.train import checkpoint as ckpt
from jigcnn.train import validate
from jigcnn.train.epochs import (LOSS_GROWTH_LIMIT, DivergenceError, EpochRules, History,  # noqa: F401
                                 after_epoch, check_divergence_args, new_run, progress_bar, resume_run)
from jigcnn.train.inputs import as_augment
from jigcnn.train.step import EPOCH_LOOPS, cached_jit, make_epoch_fn, make_eval_fn, resolve_metrics
from jigcnn.train.stopping import (PaperStopping, Patience, default_monitor,  # noqa: F401
                                   resolve_epochs_and_monitor)
from jigcnn.xla_options import resolve_compiler_options


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns."""

    params: Any
    state: Any
    opt_state: Any
    history: History
    stopped_reason: str
    metrics: dict  # final test_/val_ metrics of the returned params
    best_epoch: int | None = None
    epochs_run: int = 0


def _as_xy(data, name):
    if data is None:
        return None
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name} must be an (x, y) pair, got {type(data).__name__}")
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {x.shape[0]} inputs but {y.shape[0]} targets")
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != jnp.float32:
        x = x.astype(jnp.float32)
    return x, y


def _digest(part) -> str:
    """SHA-256 of an (x, y) part's shapes, dtypes and bytes (the processes of a run must hold the same data)."""
    h = hashlib.sha256()
    for a in part:
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def fit(model, params, state, optimizer: optax.GradientTransformation, train, test=None, validation=None, *,
        epochs: int | None = None, batch_size: int = 32, key, loss, metrics=("accuracy",), stopping=None,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, progress=True,
        augment: Callable | None = None, grad_method: str = "autodiff", dropconnect: bool | None = None,
        opt_state=None, config: dict | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
        on_divergence: str = "raise", mesh=None, eval_batch_size: int = 1024, diagnostic=None,
        loss_growth_limit: float | None = LOSS_GROWTH_LIMIT,
        epoch_loop: str = "python", compiler_options="auto") -> FitResult:
    """Train ``model`` on ``train=(x, y)``, evaluating ``test`` and ``validation`` after every epoch.

    * Epochs: ``epochs`` (or the stopping rule's ``max_epochs``: 10 passes for
      :class:`PaperStopping`); each shuffles with ``jax.random.fold_in(key, epoch)``
      and runs ``n // batch_size`` full mini-batches (the partial last batch is
      dropped).
    * ``history``: per epoch, ``train_loss`` and ``train_<metric>`` (means over the
      epoch's steps), ``test_*``, ``val_*``, ``time`` (s) and ``wall_time``.
    * ``stopping``: :class:`PaperStopping` / :class:`Patience` / None; monitors
      ``stopping.monitor`` or :func:`default_monitor`.
    * Divergence: a non-finite loss or gradient stops the run, and so does an epoch whose
      training loss exceeds ``loss_growth_limit`` (1e4) times ``max(|initial loss|, 1)``
      (the untrained net's loss on the first ``eval_batch_size`` training rows; None
      turns this check off); with ``on_divergence="raise"`` a :class:`DivergenceError`
      (``.result`` = the run so far), with ``"stop"`` the result with ``stopped_reason``
      set. The epoch's checkpoint is not written, so the last good checkpoint stays on disk.
    * ``checkpoint_dir``: a checkpoint after every epoch (atomic); ``resume=True``
      continues from it (refused if written for another model/config).
    * ``mesh``: a ``jax.sharding.Mesh`` with a ``"data"`` axis: batches sharded
      over it, params replicated (data parallelism; ``batch_size`` must divide), each step a
      ``jax.shard_map`` (every device its shard, gradients averaged). None: after
      :func:`jigcnn.distributed.initialize` joined several processes, a mesh over every process's
      devices (the same global batch and keys as one process, so the same numbers within float32
      rounding for nets without batch norm, which normalises per shard; process 0 writes the
      checkpoint; the processes' configurations and data are compared first); else no mesh.
      False: no mesh (this process alone, even in a multi-process run).
    * ``progress``: a tqdm bar over epochs when stderr is a TTY (``"always"``
      forces it, False turns it off).
    * ``augment``: ``augment(key, images) -> images`` (traceable) or a
      ``jigcnn.data.augment.AugmentConfig``, applied to every training batch.
    * ``epoch_loop``: "python" (default) runs each epoch as a Python loop over one jitted
      step; "scan" compiles the whole epoch as one ``lax.scan`` (one dispatch per epoch, but
      ~30x slower for wide convolutions on XLA:CPU). Both give the same numbers.
    * ``diagnostic``: a :class:`jigcnn.diagnostics.DiagnosticRecorder` (or any object with
      ``on_epoch_end(epoch, record, params, state) -> dict``): the paper's Fig. 4 MAVs per
      layer every N epochs, joining the epoch's history record; with ``unit="step"`` every
      N training steps instead, collected in ``history.diagnostics``.
    * the process is left as it is: the allocator and the compilation cache are the program's
      choice (:func:`jigcnn.runtime.configure_process`, which jigcnn's own programs call first).
    """
    validate.check_fit_inputs(model, train, test, validation, loss=loss, batch_size=batch_size, epochs=epochs,
                              stopping=stopping, checkpoint_dir=checkpoint_dir, resume=resume, metrics=metrics)
    augment = as_augment(augment)
    loss_name, _ = resolve_loss(loss)
    metric_fns = resolve_metrics(metrics)
    metric_names = [n for n, _ in metric_fns]
    check_divergence_args(on_divergence, loss_growth_limit, "fit")
    train, test, validation = _as_xy(train, "train"), _as_xy(test, "test"), _as_xy(validation, "validation")
    n_train = int(train[0].shape[0])
    if n_train < 1:
        raise ValueError("fit: empty training set")
    max_epochs, monitor = resolve_epochs_and_monitor(epochs, stopping, metrics, validation is not None,
                                                     test is not None, "fit")

    batch_sharding = rep = None
    if mesh is None and distributed.is_multiprocess():  # after jigcnn.distributed.initialize: every process's devices
        from jigcnn.train.parallel import make_mesh

        mesh = make_mesh()
    mesh = None if mesh is False else mesh
    multi = False
    if mesh is not None:
        from jigcnn.train.parallel import batch_sharding as _bs, put_global, replicated, spans_processes

        batch_sharding, rep = _bs(mesh), replicated(mesh)
        multi = spans_processes(mesh)
        if min(batch_size, n_train) % mesh.size:
            raise UserError(f"fit: batch_size {batch_size} is not divisible by the {mesh.size} devices of the mesh"
                             + (f" ({jax.process_count()} processes)" if multi else "")
                             + f": use a multiple of {mesh.size}")

    if epoch_loop not in EPOCH_LOOPS:
        raise ValueError(f"fit: epoch_loop must be one of {EPOCH_LOOPS}, got {epoch_loop!r}")
    per_step = diagnostic is not None and getattr(diagnostic, "unit", "epoch") == "step"
    if per_step and epoch_loop != "python":
        raise ValueError("fit: a per-step diagnostic needs epoch_loop='python'")

    options = resolve_compiler_options(compiler_options, model, tuple(train[0].shape[1:]))
    options_key = tuple(sorted(options.items())) if options else None

    def build_epoch():
        fn = make_epoch_fn(model, loss, optimizer, batch_size=batch_size, grad_method=grad_method,
                           dropconnect=dropconnect, metrics=metrics, augment=augment,
                           batch_sharding=batch_sharding, loop=epoch_loop, compiler_options=options)
        if epoch_loop == "scan":
            return jax.jit(fn, donate_argnums=(0, 2), compiler_options=options)
        return fn  # "python": jitted inside

    epoch_fn = cached_jit("epoch", build_epoch, model, loss, optimizer, batch_size, grad_method, dropconnect,
                          metrics, augment, batch_sharding, epoch_loop, options_key)
    eval_fn = cached_jit(
        "eval",
        lambda: jax.jit(make_eval_fn(model, loss, metrics=metrics, eval_batch_size=eval_batch_size,
                                     batch_sharding=batch_sharding), compiler_options=options),
        model, loss, metrics, eval_batch_size, batch_sharding, options_key)

    def put(tree):
        return put_global(tree, rep) if rep is not None else tree

    def copy(tree):
        return jax.tree.map(jnp.copy, tree)

    if opt_state is None:
        opt_state = optimizer.init(params)
    # the epoch function donates params and optimizer state: work on copies, never on the caller's arrays
    params, state, opt_state = put(copy(params)), put(copy(state)), put(copy(opt_state))
    parts = {"train": train, "test": test, "val": validation}
    data = {k: (put(v[0]), put(v[1]), jnp.arange(v[0].shape[0], dtype=jnp.int32), v[0].shape[0])
            for k, v in parts.items() if v is not None}

    run_config = {"loss": loss_name or repr(loss), "metrics": metric_names, "batch_size": batch_size,
                  "grad_method": grad_method, "stopping": repr(stopping), "monitor": monitor,
                  "key": np.asarray(jax.random.key_data(key)).tolist(), "n_train": n_train,
                  "augment": augment is not None, **(config or {})}
    fp, desc = ckpt.fingerprint(model, run_config)
    if multi:  # every process must run the same thing on the same data: compare before the first collective
        distributed.check_consistent("fit configuration", {
            "fingerprint": fp, "description": desc, "epochs": max_epochs, "eval_batch_size": eval_batch_size,
            "resume": bool(resume), "epoch_loop": epoch_loop, "devices": mesh.size,
            "data": {k: _digest(v) for k, v in parts.items() if v is not None}})
    ckpt_path = os.path.join(os.fspath(checkpoint_dir), ckpt.CHECKPOINT_NAME) if checkpoint_dir else None
    restore_best = bool(getattr(stopping, "restore_best", False))
    rules = EpochRules(max_epochs, tuple(metric_names), stopping, monitor, restore_best, loss_growth_limit, "fit")

    run = new_run(rules)
    start_epoch = 1
    wall_offset = 0.0

    def ckpt_tree(best=None):
        tree = {"params": params, "state": state, "opt_state": opt_state}
        if restore_best:
            bp, bs = best if best is not None else (params, state)
            tree["best"] = {"params": bp, "state": bs}
        return tree

    if resume and ckpt_path and os.path.exists(ckpt_path):
        tree, meta = ckpt.load(ckpt_path, ckpt_tree(), fingerprint=fp, description=desc)
        params, state, opt_state = put(tree["params"]), put(tree["state"]), put(tree["opt_state"])
        best = (put(tree["best"]["params"]), put(tree["best"]["state"])) if restore_best else None
        run, start_epoch = resume_run(meta, rules, best)
        wall_offset = float(run.history.last.get("wall_time", 0.0)) if len(run.history) else 0.0
    elif resume and ckpt_path is None:
        raise ValueError("fit: resume=True needs checkpoint_dir")
    if multi and resume:  # every process must continue from the same epoch (a checkpoint_dir not shared: refused)
        distributed.check_consistent("resume point", {"start_epoch": start_epoch, "epochs_done": len(run.history)})
    guard = distributed.failure_guard("fit") if multi else contextlib.nullcontext()
    if run.initial_loss is None and loss_growth_limit is not None:
        # the growth rule's reference: the untrained net's loss on the first training rows (one eval chunk)
        x, y, rows, n = data["train"]
        m = min(n, eval_batch_size)
        with guard:
            run = run._replace(initial_loss=float(jax.device_get(
                eval_fn(params, state, x, y, rows[:m], jnp.int32(m)))["loss"]))

    def write_checkpoint(r, meta):
        if multi and jax.process_index() != 0:
            return  # params are replicated: process 0 writes the one checkpoint (on a shared folder)
        ckpt.save(ckpt_path, ckpt_tree(r.best), meta, fingerprint=fp, description=desc)

    bar = progress_bar(progress, max_epochs, start_epoch - 1) if run.stopped_reason is None else None
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch, max_epochs + 1):
            if run.stopped_reason is not None:
                break
            t0 = time.perf_counter()
            x, y, rows, n = data["train"]
            ekey = jax.random.fold_in(key, epoch)
            extra = {}
            if per_step:
                offset = (epoch - 1) * (n // min(batch_size, n))
                extra["on_step"] = lambda s, p, st, off=offset: diagnostic(off + s, p, st)
            params, state, opt_state, stats = epoch_fn(params, state, opt_state, x, y, rows, jnp.int32(n), ekey,
                                                       jnp.array(True), **extra)
            evals = {p: eval_fn(params, state, d[0], d[1], d[2], jnp.int32(d[3]))
                     for p, d in data.items() if p != "train"}
            stats, evals = jax.device_get((stats, evals))
            # the diagnostic and restore-best read these params before the next epoch call donates them
            run, out = after_epoch(run, stats, evals, epoch=epoch, rules=rules, time=time.perf_counter() - t0,
                                   wall_clock=lambda: wall_offset + time.perf_counter() - t_start,
                                   weights=lambda: (params, state), diagnostic=diagnostic,
                                   checkpoint=write_checkpoint if ckpt_path else None)
            if out.diverged:
                result = _finish(params, state, opt_state, run, data, eval_fn)
                if bar is not None:
                    bar.close()
                    bar = None
                if on_divergence == "raise":
                    has_ckpt = bool(ckpt_path) and os.path.exists(ckpt_path)
                    raise DivergenceError(out.reason + (f"; last good checkpoint: {ckpt_path}" if has_ckpt else ""),
                                          result, epoch, out.step, out.layers)
                return result
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in out.record.items()
                                 if k.endswith(("loss", "accuracy", "mape", "mae")) and not k.startswith("train_")})
            if on_epoch_end is not None:
                on_epoch_end(epoch, out.record)
    except Exception as e:
        if multi:
            distributed.raise_if_lost(e, "fit")
        raise
    finally:
        if bar is not None:
            bar.close()
    if run.stopped_reason is None:
        run = run._replace(stopped_reason=f"completed {max_epochs} epochs")
    return _finish(params, state, opt_state, run, data, eval_fn)


def _finish(params, state, opt_state, run, data, eval_fn) -> FitResult:
    if run.best is not None:
        params, state = run.best
    final = {}
    for p, d in data.items():
        if p == "train":
            continue
        ev = jax.device_get(eval_fn(params, state, d[0], d[1], d[2], jnp.int32(d[3])))
        final.update({f"{p}_{k}": float(v) for k, v in ev.items()})
    return FitResult(params, state, opt_state, run.history, run.stopped_reason, final, run.best_epoch,
                     len(run.history))
