"""Parallel training: all folds (or seeds) in one compiled program, and data parallelism over devices.

**Folds under vmap.** :func:`fit_folds_vmapped` stacks the k folds' params,
model states and optimizer states along a leading axis and runs the *same*
pure epoch function as :func:`jigcnn.train.fit` under ``jax.vmap``: one compiled
program trains every fold. Folds of unequal size are padded to the longest
fold: each fold shuffles only its own rows (:func:`jigcnn.train.step.epoch_order`
is prefix-consistent, so the order equals the fold's order on its own) and runs
its own ``n_f // batch_size`` steps; the extra steps of shorter folds are
masked (not applied). Evaluation masks padded rows. After every epoch each fold
goes through the same bookkeeping as ``fit`` (:func:`jigcnn.train.epochs.after_epoch`:
history record, divergence and its message, stopping rule, restore-best) on its
own unstacked statistics; a stopped (or diverged) fold stays frozen while the
others go on. The result matches training the folds one after another within
float tolerance (vmap may reorder reductions).

**Data parallelism.** A ``jax.sharding.Mesh`` with one ``"data"`` axis; batches
are sharded along it (``NamedSharding(mesh, P("data"))``), params and optimizer
state replicated (``P()``); each step is one ``jax.shard_map`` (every device its shard,
native kernels on) with a ``pmean`` of the gradients. Several processes / hosts: call
:func:`jigcnn.distributed.initialize` in every process first; ``fit`` then builds the
mesh over ``jax.devices()`` (every process's devices) itself -- see docs/training.md.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jigcnn import ops
from jigcnn.train.epochs import (LOSS_GROWTH_LIMIT, DivergenceError, EpochRules, History, after_epoch,
                                 check_divergence_args, new_run, progress_bar)
from jigcnn.train.inputs import as_augment
from jigcnn.train.stopping import resolve_epochs_and_monitor
from jigcnn.train.step import (cached_jit, make_epoch_fn, make_eval_fn, make_update, resolve_metrics, shard_update,
                               step_kernels)

# ---------------------------------------------------------------- data parallelism


def make_mesh(devices=None, axis: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device, all hosts') with axis ``axis``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (axis,))


def batch_sharding(mesh: Mesh, axis: str = "data") -> NamedSharding:
    """Leading (batch) axis split over ``axis``, the rest replicated."""
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def shard_batch(x, mesh: Mesh, axis: str = "data"):
    """Place a batch on the mesh, split along its first axis (its size must divide by the device count)."""
    return jax.device_put(x, batch_sharding(mesh, axis))


def replicate(tree, mesh: Mesh):
    """Place a pytree (params, optimizer state) on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def spans_processes(mesh) -> bool:
    """Whether ``mesh`` holds devices of several processes (a multi-process run)."""
    return mesh is not None and len({d.process_index for d in np.asarray(mesh.devices).flat}) > 1


def put_global(tree, sharding: NamedSharding):
    """Place a pytree with ``sharding``; across processes from this process's (identical) host copy.

    In a multi-process run every process must pass the same values (the data and the initial
    params are replicated: each process holds all of it). PRNG-key leaves keep their implementation.
    """
    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = one(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    if not spans_processes(sharding.mesh):
        return jax.device_put(tree, sharding)
    return jax.tree.map(one, tree)


def data_parallel_train_step(model, loss, optimizer: optax.GradientTransformation, mesh: Mesh, *,
                             grad_method: str = "autodiff", dropconnect: bool | None = None, metrics=(),
                             axis: str = "data", donate: bool = True):
    """A jitted SPMD step ``step(params, state, opt_state, x, y, key)`` with the batch sharded over ``mesh``.

    Same signature and results (within float tolerance) as
    :func:`jigcnn.train.make_train_step`; inputs are placed with
    :func:`shard_batch` / :func:`replicate` automatically by ``jit``'s shardings. The step is one
    ``jax.shard_map``: each device runs its shard of the batch (the native kernels on), the
    gradients, loss, metrics and model state are averaged over the devices with ``pmean``.
    """
    update = make_update(model, loss, optimizer, grad_method=grad_method, dropconnect=dropconnect,
                         metrics=metrics, axis_name=axis)
    rep, bat = replicated(mesh), batch_sharding(mesh, axis)
    use = step_kernels(None, bat)  # native kernels on: each device runs its own shard (shard_map)
    sharded = shard_update(update, mesh, axis)

    def step(params, state, opt_state, x, y, key):
        with ops.using(use):
            return sharded(params, state, opt_state, x, y, key, True)

    return jax.jit(step, in_shardings=(rep, rep, rep, bat, bat, rep), out_shardings=(rep, rep, rep, rep),
                   donate_argnums=(0, 2) if donate else ())


# ---------------------------------------------------------------- folds / seeds under vmap


def stack_trees(trees: Sequence[Any]):
    """Stack pytrees of equal structure along a new leading axis (PRNG keys included)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_tree(tree, n: int) -> list:
    """The inverse of :func:`stack_trees`."""
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def fold_keys(key, k: int) -> list[tuple[jax.Array, jax.Array]]:
    """(init key, train key) for each of ``k`` folds/seeds; the sequential and vmapped paths share them."""
    out = []
    for f in range(k):
        kf = jax.random.fold_in(key, f)
        out.append((jax.random.fold_in(kf, 0), jax.random.fold_in(kf, 1)))
    return out


def _pad_rows(index_sets, pad_to=None):
    m = max(max((len(r) for r in index_sets), default=0), 1) if pad_to is None else pad_to
    rows = np.zeros((len(index_sets), m), np.int32)
    n = np.zeros((len(index_sets),), np.int32)
    for i, r in enumerate(index_sets):
        rows[i, : len(r)] = np.asarray(r, np.int32)
        n[i] = len(r)
    return jnp.asarray(rows), jnp.asarray(n)


@dataclasses.dataclass
class FoldsResult:
    """What :func:`fit_folds_vmapped` returns: stacked final params and a history per fold."""

    params: Any  # stacked along axis 0
    state: Any
    opt_state: Any
    histories: list[History]
    stopped_reasons: list[str]
    metrics: list[dict]  # per fold: final test_/val_ metrics of the returned params
    best_epochs: list[int | None]

    def fold_params(self, f: int):
        """Fold ``f``'s params (unstacked)."""
        return jax.tree.map(lambda x: x[f], self.params)


_NOT_PER_FOLD = {
    "checkpoint_dir": "per-epoch checkpoints (and so resume)",
    "resume": "resuming from checkpoints",
    "mesh": "data parallelism over a device mesh",
    "diagnostic": "the per-epoch Fig. 4 diagnostic hook",
    "on_epoch_end": "the per-epoch callback",
}


def fit_folds_vmapped(model, optimizer: optax.GradientTransformation, x, y, folds, *, key, loss,
                      metrics=("accuracy",), epochs: int | None = None, batch_size: int = 32, validation=None,
                      stopping=None, augment: Callable | None = None, grad_method: str = "autodiff",
                      dropconnect: bool | None = None, init=None, eval_batch_size: int = 1024,
                      progress=True, fold_batch: int | None = None, on_divergence: str = "stop",
                      loss_growth_limit: float | None = LOSS_GROWTH_LIMIT, checkpoint_dir=None, resume: bool = False,
                      mesh=None, diagnostic=None, on_epoch_end=None) -> FoldsResult:
    """Train every fold in one compiled program (``jax.vmap`` over stacked params, states and index sets).

    ``folds``: a list of (train_rows, test_rows) index arrays into ``x``/``y``
    (test_rows may be None); ``validation``: rows into ``x`` shared by every fold,
    or a list of per-fold rows, or None. Fold ``f`` is initialised with
    ``model.init(fold_keys(key, k)[f][0])`` (or ``init[f] = (params, state)``)
    and shuffled with its train key -- exactly like training it alone with
    :func:`jigcnn.train.fit` and ``key=fold_keys(key, k)[f][1]`` on
    ``x[train_rows]``. Several seeds on one split: pass the same rows k times.

    After each epoch every active fold goes through ``fit``'s own bookkeeping
    (:func:`jigcnn.train.epochs.after_epoch`): the same history records, the same
    divergence rules and message (a non-finite step, or a training loss above
    ``loss_growth_limit`` times the initial one), the same stopping rule and
    ``restore_best``. A stopped or diverged fold is frozen while the others go on.
    ``on_divergence="stop"`` (the default here, unlike ``fit``: one fold's
    divergence does not end the others) records the message as that fold's
    stopped reason; ``"raise"`` raises :class:`DivergenceError` (message prefixed
    ``fold f:``, ``.result`` the :class:`FoldsResult` so far) after the epoch in
    which the first fold diverged.

    Not supported per fold (a ``ValueError`` names the argument): ``checkpoint_dir``
    / ``resume``, ``mesh``, ``diagnostic`` and ``on_epoch_end``; use ``fit`` fold
    by fold (``cross_validate(..., vmapped=False)``) for those.

    ``fold_batch=None`` vectorises all folds with ``jax.vmap``; an int runs them
    with ``jax.lax.map(..., batch_size=fold_batch)`` instead (still one compiled
    program, vmapped in chunks; ``1`` = one fold after another inside it). On
    XLA:CPU a vmapped convolution whose kernels differ per fold becomes a grouped
    convolution, which is slow there; ``fold_batch=1`` avoids it.
    """
    given = {"checkpoint_dir": checkpoint_dir, "resume": resume, "mesh": mesh, "diagnostic": diagnostic,
             "on_epoch_end": on_epoch_end}
    for name, value in given.items():
        if value is not None and value is not False:
            raise ValueError(f"fit_folds_vmapped does not support {name}={value!r} ({_NOT_PER_FOLD[name]}); "
                             "train the folds one by one with fit (cross_validate(..., vmapped=False))")
    check_divergence_args(on_divergence, loss_growth_limit, "fit_folds_vmapped")
    augment = as_augment(augment)
    k = len(folds)
    x, y = jnp.asarray(x), jnp.asarray(y)
    metric_names = [n for n, _ in resolve_metrics(metrics)]
    keys = fold_keys(key, k)
    if init is None:
        init = [model.init(ik) for ik, _ in keys]
    params = stack_trees([p for p, _ in init])
    state = stack_trees([s for _, s in init])
    opt_state = stack_trees([optimizer.init(p) for p, _ in init])
    train_keys = stack_trees([tk for _, tk in keys])

    train_rows, train_n = _pad_rows([f[0] for f in folds])
    parts = {}
    if any(f[1] is not None and len(f[1]) for f in folds):
        parts["test"] = _pad_rows([f[1] if f[1] is not None else [] for f in folds])
    if validation is not None:
        vsets = validation if isinstance(validation, (list, tuple)) and len(validation) == k and \
            not np.isscalar(validation[0]) else [validation] * k
        parts["val"] = _pad_rows(vsets)

    max_epochs, monitor = resolve_epochs_and_monitor(epochs, stopping, metrics, "val" in parts, "test" in parts,
                                                     "fit_folds_vmapped")
    restore_best = bool(getattr(stopping, "restore_best", False))
    rules = EpochRules(max_epochs, tuple(metric_names), stopping, monitor, restore_best, loss_growth_limit,
                       "fit_folds_vmapped")

    def build_epoch():
        core = make_epoch_fn(model, loss, optimizer, batch_size=batch_size, grad_method=grad_method,
                             dropconnect=dropconnect, metrics=metrics, augment=augment)
        if fold_batch is None:
            fn = jax.vmap(core, in_axes=(0, 0, 0, None, None, 0, 0, 0, 0))
        else:
            def fn(p, s, o, xa, ya, rows, n, keys, act):
                return jax.lax.map(lambda a: core(a[0], a[1], a[2], xa, ya, *a[3:]), (p, s, o, rows, n, keys, act),
                                   batch_size=fold_batch)
        return jax.jit(fn, donate_argnums=(0, 2))

    def build_eval():
        core = make_eval_fn(model, loss, metrics=metrics, eval_batch_size=eval_batch_size)
        if fold_batch is None:
            fn = jax.vmap(core, in_axes=(0, 0, None, None, 0, 0))
        else:
            def fn(p, s, xa, ya, rows, n):
                return jax.lax.map(lambda a: core(a[0], a[1], xa, ya, a[2], a[3]), (p, s, rows, n),
                                   batch_size=fold_batch)
        return jax.jit(fn)

    epoch_v = cached_jit("epoch_folds", build_epoch, model, loss, optimizer, batch_size, grad_method, dropconnect,
                         metrics, augment, fold_batch)
    eval_v = cached_jit("eval_folds", build_eval, model, loss, metrics, eval_batch_size, fold_batch)

    initial = [None] * k
    if loss_growth_limit is not None:  # the growth rule's reference: the untrained folds' loss (see fit)
        m = min(int(train_rows.shape[1]), eval_batch_size)
        ev0 = jax.device_get(eval_v(params, state, x, y, train_rows[:, :m], jnp.minimum(train_n, m)))
        initial = [float(ev0["loss"][f]) for f in range(k)]
    runs = [new_run(rules, initial[f]) for f in range(k)]
    active = np.ones((k,), bool)
    raised = None  # (fold, epoch, outcome) of the first fold that diverged, with on_divergence="raise"
    bar = progress_bar(progress, max_epochs, 0)
    t_start = time.perf_counter()
    try:
        for epoch in range(1, max_epochs + 1):
            if not active.any():
                break
            t0 = time.perf_counter()
            ekeys = jax.vmap(lambda kk: jax.random.fold_in(kk, epoch))(train_keys)
            params, state, opt_state, stats = epoch_v(params, state, opt_state, x, y, train_rows, train_n, ekeys,
                                                      jnp.asarray(active))
            evals = {p: eval_v(params, state, x, y, r, n) for p, (r, n) in parts.items()}
            stats, evals = jax.device_get((stats, evals))
            dt = time.perf_counter() - t0
            for f in range(k):
                if not active[f]:
                    continue
                runs[f], out = after_epoch(
                    runs[f], jax.tree.map(lambda v, f=f: v[f], stats), jax.tree.map(lambda v, f=f: v[f], evals),
                    epoch=epoch, rules=rules, time=dt, wall_clock=lambda: time.perf_counter() - t_start,
                    weights=lambda f=f: (jax.tree.map(lambda a: a[f], params), jax.tree.map(lambda a: a[f], state)))
                if out.stop:
                    active[f] = False
                if out.diverged and on_divergence == "raise" and raised is None:
                    raised = (f, epoch, out)
            if bar is not None:
                bar.update(1)
            if raised is not None:
                break
    finally:
        if bar is not None:
            bar.close()
    reasons = [r.stopped_reason or f"completed {max_epochs} epochs" for r in runs]
    if restore_best and any(r.best is not None for r in runs):
        per_fold = [r.best if r.best is not None else
                    (jax.tree.map(lambda a, f=f: a[f], params), jax.tree.map(lambda a, f=f: a[f], state))
                    for f, r in enumerate(runs)]
        params, state = stack_trees([p for p, _ in per_fold]), stack_trees([s for _, s in per_fold])
    evals = jax.device_get({p: eval_v(params, state, x, y, r, n) for p, (r, n) in parts.items()})
    final = [{f"{p}_{kk}": float(v[f]) for p, ev in evals.items() for kk, v in ev.items()} for f in range(k)]
    result = FoldsResult(params, state, opt_state, [r.history for r in runs], reasons, final,
                         [r.best_epoch for r in runs])
    if raised is not None:
        f, epoch, out = raised
        raise DivergenceError(f"fold {f}: {out.reason}", result, epoch, out.step, out.layers)
    return result
