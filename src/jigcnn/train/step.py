"""Pure, jitted training and evaluation steps.

Three layers of functions, each pure (no Python state, no host sync):

* :func:`make_train_step` -- one mini-batch update, jitted, params and optimizer
  state donated: ``step(params, state, opt_state, x, y, key) -> (params, state,
  opt_state, metrics)``.
* :func:`make_epoch_fn` -- one pass over a shuffled training set as a single
  ``lax.scan`` over mini-batches (batches gathered on device from index arrays);
  the building block of :func:`jigcnn.train.fit` and, under ``jax.vmap``, of
  :func:`jigcnn.train.fit_folds_vmapped`.
* :func:`make_eval_fn` -- loss and metrics over a data set, in fixed-size chunks.

Gradients come from :func:`jigcnn.grad.value_and_grad`, by autodiff or by the
hand-written backprop (``grad_method="manual"``); the step is the same either way.

Divergence: every step computes, per top-level layer, whether its gradient is
finite, and whether the loss is. A non-finite step is *not applied* (params,
model state and optimizer state stay as they were) and, inside an epoch, every
later step is skipped too, so the epoch ends with the last good values and
reports the first bad step and the layers whose gradient went non-finite.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jigcnn import metrics as _metrics
from jigcnn import ops
from jigcnn.grad import resolve_loss, value_and_grad
from jigcnn.layers.misc import batch_shard
from jigcnn.xla_options import resolve_compiler_options

MetricFn = Callable[[Any, Any], Any]

METRICS: dict[str, MetricFn] = dict(_metrics.BY_NAME)


def resolve_metrics(metrics: Sequence[str | tuple[str, MetricFn]] | None) -> tuple[tuple[str, MetricFn], ...]:
    """((name, fn), ...) for metric names ("accuracy", "mape", "mae") or (name, fn) pairs."""
    out = []
    for m in metrics or ():
        if isinstance(m, str):
            if m not in METRICS:
                raise ValueError(f"unknown metric {m!r}; choose one of {sorted(METRICS)} or pass (name, fn)")
            out.append((m, METRICS[m]))
        elif isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str) and callable(m[1]):
            out.append(m)
        else:
            raise TypeError(f"a metric is a name or a (name, fn) pair, got {m!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metric names must be unique and not 'loss': {names}")
    return tuple(out)


def _partitioned(batch_sharding) -> bool:
    """Whether the batch is split over several devices."""
    return batch_sharding is not None and batch_sharding.mesh.size > 1


def step_kernels(kernels=None, batch_sharding=None) -> ops.Kernels:
    """The kernels a step built now traces with: `kernels` (default: the current `jigcnn.ops` configuration).

    The native kernels stay on when the batch is split over several devices: a split step runs
    each device's shard under ``jax.shard_map`` (:func:`shard_update`), so XLA's partitioner never
    sees the custom calls and never gathers the batch to run them.
    """
    return ops.resolve(kernels)


def batch_axis(batch_sharding) -> str:
    """The mesh axis a batch sharding splits the leading (batch) axis over."""
    spec = batch_sharding.spec
    axis = spec[0] if len(spec) else None
    if not isinstance(axis, str):
        raise ValueError(f"a batch sharding splits axis 0 over one named mesh axis, got {spec!r}")
    return axis


def _pmean_inexact(tree, axis):
    """The mean over ``axis`` of every floating leaf (integer and key leaves are kept as they are)."""
    def one(x):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact):
            return jax.lax.pmean(x, axis)
        return x
    return jax.tree.map(one, tree)


def shard_update(update, mesh, axis: str = "data"):
    """``update`` (made with ``axis_name=axis``) as one ``jax.shard_map`` over ``mesh``: each device its batch shard.

    Params, model state, optimizer state, key and ``active`` are replicated (``P()``), ``x`` and
    ``y`` split along ``axis`` (``P(axis)``); the gradients, loss, metrics and model state are
    averaged over the shards inside (``jax.lax.pmean``), so every output is replicated.
    """
    from jax.sharding import PartitionSpec as P

    rep, bat = P(), P(axis)
    mapped = jax.shard_map(update, mesh=mesh, in_specs=(rep, rep, rep, bat, bat, rep, rep),
                           out_specs=(rep, rep, rep, rep), check_vma=False)

    def run(params, state, opt_state, x, y, key, active=True):
        return mapped(params, state, opt_state, x, y, key, jnp.asarray(active))

    return run


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def layer_finite(grads) -> dict[str, jax.Array]:
    """{layer name: whether every element of that layer's gradient is finite} (a bool scalar each)."""
    return {name: _all_finite(g) for name, g in grads.items()}


def _select(pred, new, old):
    """`new` where `pred` else `old`, leaf by leaf (works with PRNG-key leaves and under vmap)."""
    return jax.tree.map(lambda n, o: jax.lax.select(pred, n, o), new, old)


def _uses_dropconnect(opt_state) -> bool:
    try:
        from jigcnn.optim.connect import DropConnectState, find_states
    except ImportError:  # pragma: no cover - optim is part of the package
        return False
    return bool(find_states(opt_state, DropConnectState))


def make_grad_fn(model, loss, *, grad_method: str = "autodiff", dropconnect: bool | None = None):
    """`g(params, state, opt_state, x, y, key) -> ((loss, Aux), grads)`; dropconnect masks applied when used.

    With dropconnect (``True``, or ``None`` = whenever ``opt_state`` holds a
    :class:`jigcnn.optim.DropConnectState`), the forward pass sees
    ``jigcnn.optim.dropconnect_params(params, opt_state)`` and the gradient is
    carried back through that (elementwise, linear) map with ``jax.vjp``: a dropped
    weight gets exactly zero gradient with either gradient method.
    """
    vg = value_and_grad(model, loss, method=grad_method)

    def grad_fn(params, state, opt_state, x, y, key):
        use_dc = _uses_dropconnect(opt_state) if dropconnect is None else dropconnect
        if not use_dc:
            return vg(params, state, x, y, train=True, key=key)
        from jigcnn.optim.connect import dropconnect_params

        p_fwd, back = jax.vjp(lambda p: dropconnect_params(p, opt_state), params)
        value, g_fwd = vg(p_fwd, state, x, y, train=True, key=key)
        (grads,) = back(g_fwd)
        return value, grads

    return grad_fn


def _merge_state(old, new):
    """Model state after a step with the structure of `old` (layers the step did not return keep theirs)."""
    return {name: new.get(name, s) if isinstance(new, dict) else s for name, s in old.items()}


def make_update(model, loss, optimizer: optax.GradientTransformation, *, grad_method="autodiff",
                dropconnect=None, metrics=(), axis_name: str | None = None):
    """The un-jitted update `u(params, state, opt_state, x, y, key, active) -> (params, state, opt_state, m)`.

    `m`: ``loss``, each metric on the batch outputs, ``ok`` (loss, every
    gradient and every updated parameter finite), ``applied`` (``ok and
    active``), ``loss_finite`` and ``grad_finite`` ({layer: bool}: that layer's
    gradient and updated parameters are finite). The update is applied only
    when ``applied``.

    ``axis_name``: the update runs on one shard of the batch inside ``jax.shard_map`` (see
    :func:`shard_update`): the gradients, the loss, the metrics and the model state (batch norm's
    running statistics) are averaged over that axis before they are used, so every shard applies
    the same update; every shard gets the step's forward key and dropout keeps its rows of the
    whole batch's mask (:func:`jigcnn.layers.misc.batch_shard`), so the masks are one device's.
    Batch norm normalises with its shard's statistics.
    """
    grad_fn = make_grad_fn(model, loss, grad_method=grad_method, dropconnect=dropconnect)
    metric_fns = resolve_metrics(metrics)

    def update(params, state, opt_state, x, y, key, active=True):
        if axis_name is not None:
            with batch_shard(axis_name, jax.lax.axis_size(axis_name)):
                (loss_val, aux), grads = grad_fn(params, state, opt_state, x, y, key)
        else:
            (loss_val, aux), grads = grad_fn(params, state, opt_state, x, y, key)
        batch_metrics = {name: fn(aux.outputs, y) for name, fn in metric_fns}
        model_state = _merge_state(state, aux.state)
        if axis_name is not None:  # every shard's mean, averaged: the global batch's (equal shards)
            grads, loss_val, batch_metrics, model_state = _pmean_inexact(
                (grads, loss_val, batch_metrics, model_state), axis_name)
        finite = layer_finite(grads)
        loss_ok = jnp.isfinite(loss_val)
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # an update can overflow even from finite gradients (a huge step): count it as that layer's failure
        finite = {name: jnp.logical_and(f, _all_finite(new_params[name])) for name, f in finite.items()}
        ok = jnp.logical_and(loss_ok, jnp.all(jnp.stack(list(finite.values()))) if finite else True)
        applied = jnp.logical_and(ok, active)
        new_params = _select(applied, new_params, params)
        new_opt = _select(applied, new_opt, opt_state)
        new_state = _select(applied, model_state, state)
        m = {"loss": loss_val, **batch_metrics}
        m.update(ok=ok, applied=applied, loss_finite=loss_ok, grad_finite=finite)
        return new_params, new_state, new_opt, m

    return update


def make_train_step(model, loss, optimizer: optax.GradientTransformation, *, grad_method: str = "autodiff",
                    dropconnect: bool | None = None, metrics=(), donate: bool = True, jit: bool = True,
                    compiler_options="auto", kernels=None):
    """A jitted step ``step(params, state, opt_state, x, y, key) -> (params, state, opt_state, metrics)``.

    ``metrics`` (a dict of device scalars, fetch them when you need them): ``loss``,
    the requested batch metrics, ``ok`` / ``applied`` (the update was finite and
    applied), ``loss_finite`` and ``grad_finite`` ({top-level layer: bool}). A
    non-finite step returns the inputs unchanged. ``params`` and ``opt_state`` are
    donated (do not reuse the arrays you passed in) unless ``donate=False``.
    ``compiler_options``: XLA options for this step (None, a dict, or "auto":
    :func:`jigcnn.xla_options.resolve_compiler_options`). ``kernels``: the `jigcnn.ops` configuration
    the step is traced with (default: the one in force when the step is built).
    """
    update = make_update(model, loss, optimizer, grad_method=grad_method, dropconnect=dropconnect,
                         metrics=metrics)
    use = step_kernels(kernels)

    def step(params, state, opt_state, x, y, key):
        with ops.using(use):
            return update(params, state, opt_state, x, y, key, True)

    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 2) if donate else (),
                   compiler_options=resolve_compiler_options(compiler_options, model))


def epoch_order(key, n_valid, size: int):
    """A random order of ``range(size)`` with the ``n_valid`` first indices first, shuffled.

    Prefix-consistent: the order of the valid indices depends only on ``key`` and
    ``n_valid`` -- not on ``size`` -- so a fold padded to the longest fold (vmap)
    is shuffled exactly like the same fold on its own.
    """
    idx = jnp.arange(size, dtype=jnp.int32)
    pri = jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(key, i), dtype=jnp.uint32))(idx) >> 1
    pri = jnp.where(idx < n_valid, pri, jnp.uint32(0xFFFFFFFF))
    return jnp.argsort(pri, stable=True).astype(jnp.int32)


EPOCH_LOOPS = ("scan", "python")


def make_epoch_fn(model, loss, optimizer: optax.GradientTransformation, *, batch_size: int = 32,
                  grad_method: str = "autodiff", dropconnect: bool | None = None, metrics=(),
                  augment: Callable | None = None, batch_sharding=None, loop: str = "scan",
                  compiler_options="auto", kernels=None):
    """One epoch as a pure function.

    ``epoch(params, state, opt_state, x_all, y_all, rows, n_valid, key, active) ->
    (params, state, opt_state, stats)``: ``rows`` (int, length M, static) indexes
    ``x_all``/``y_all``; the first ``n_valid`` of them are this run's training set
    (the rest is padding). Each epoch draws a fresh order (:func:`epoch_order`)
    and runs ``n_valid // batch_size`` full mini-batches: the last partial batch
    is dropped (a different remainder every epoch). There are ``M // batch_size``
    steps; steps past this run's count, steps of an inactive run
    (``active=False``), and every step after a non-finite one are skipped.

    ``loop="scan"``: the epoch is one ``lax.scan`` (not jitted here; jit or vmap it).
    ``loop="python"``: the same step body, jitted once, called from a Python loop
    (already compiled; do not jit or vmap it). Both give the same numbers. On
    XLA:CPU a convolution with tens of channels runs ~30x slower inside a scan
    than as a jitted step (measured: ``vgg_small``, batch 64), so ``fit`` uses
    the Python loop by default; vmapped folds need the scan.

    ``augment(key, images) -> images`` (traceable) is applied to each training
    batch with a per-step key; ``batch_sharding`` (a ``NamedSharding``) constrains
    each batch's layout for data parallelism.

    ``compiler_options`` (``loop="python"`` only: the scan is jitted by the caller):
    XLA options for the jitted step, see :func:`jigcnn.xla_options.resolve_compiler_options`.
    ``kernels``: the `jigcnn.ops` configuration the epoch is traced with (default: the one in force
    when it is built). When ``batch_sharding`` splits the batch over several devices, each step is
    one ``jax.shard_map`` (:func:`shard_update`): every device computes its shard (native kernels
    on), the gradients, loss and metrics are averaged over the shards.

    ``stats``: mean ``loss`` and metrics over the applied steps, ``steps``
    (applied), ``bad_step`` (first non-finite step of the epoch, -1 if none),
    ``bad_loss_finite`` and ``bad_grad_finite`` ({layer: bool}) at that step.
    """
    if loop not in EPOCH_LOOPS:
        raise ValueError(f"loop must be one of {EPOCH_LOOPS}, got {loop!r}")
    update = make_update(model, loss, optimizer, grad_method=grad_method, dropconnect=dropconnect,
                         metrics=metrics)
    if _partitioned(batch_sharding):  # each device computes its shard, native kernels on (shard_map)
        axis = batch_axis(batch_sharding)
        sharded = shard_update(make_update(model, loss, optimizer, grad_method=grad_method, dropconnect=dropconnect,
                                           metrics=metrics, axis_name=axis), batch_sharding.mesh, axis)
    metric_names = ["loss"] + [n for n, _ in resolve_metrics(metrics)]
    use = step_kernels(kernels, batch_sharding)

    def body(carry, s, order, rows, x_all, y_all, key, n_steps, active, bs):
        params, state, opt_state, bad_step, bad_loss, bad_grad, sums, count = carry
        pos = jax.lax.dynamic_slice(order, (s * bs,), (bs,))
        idx = rows[pos]
        xb, yb = x_all[idx], y_all[idx]
        k_step = jax.random.fold_in(key, s + 1)
        k_aug, k_fwd = jax.random.split(k_step)
        if augment is not None:
            xb = augment(k_aug, xb)
        step_update = update
        if batch_sharding is not None:
            xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
            yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            if _partitioned(batch_sharding) and bs % batch_sharding.mesh.size == 0:
                step_update = sharded
        live = jnp.logical_and(jnp.logical_and(active, s < n_steps), bad_step < 0)
        with ops.using(use):
            params, state, opt_state, m = step_update(params, state, opt_state, xb, yb, k_fwd, live)
        first_bad = jnp.logical_and(live, jnp.logical_not(m["ok"]))
        bad_step = jnp.where(first_bad, s, bad_step)
        bad_loss = jnp.where(first_bad, m["loss_finite"], bad_loss)
        bad_grad = jax.tree.map(lambda new, old: jnp.where(first_bad, new, old), m["grad_finite"], bad_grad)
        applied = m["applied"]
        sums = {n: sums[n] + jnp.where(applied, m[n].astype(jnp.float32), 0.0) for n in metric_names}
        count = count + applied.astype(jnp.int32)
        return params, state, opt_state, bad_step, bad_loss, bad_grad, sums, count

    def start(params, key, n_valid, size):
        order = epoch_order(jax.random.fold_in(key, 0), n_valid, size)
        bad_grad0 = {name: jnp.array(True) for name in params}
        sums0 = {n: jnp.zeros((), jnp.float32) for n in metric_names}
        return order, (jnp.array(-1, jnp.int32), jnp.array(True), bad_grad0, sums0, jnp.zeros((), jnp.int32))

    def finish(carry):
        params, state, opt_state, bad_step, bad_loss, bad_grad, sums, count = carry
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        stats = {n: jnp.where(count > 0, sums[n] / denom, jnp.nan) for n in metric_names}
        stats.update(steps=count, bad_step=bad_step, bad_loss_finite=bad_loss, bad_grad_finite=bad_grad)
        return params, state, opt_state, stats

    def epoch(params, state, opt_state, x_all, y_all, rows, n_valid, key, active=True):
        size = rows.shape[0]
        bs = min(batch_size, size)
        order, extra = start(params, key, n_valid, size)
        carry0 = (params, state, opt_state) + extra
        ctx = (order, rows, x_all, y_all, key, n_valid // bs, active, bs)
        carry, _ = jax.lax.scan(lambda c, s: (body(c, s, *ctx), None), carry0,
                                jnp.arange(size // bs, dtype=jnp.int32))
        return finish(carry)

    if loop == "scan":
        return epoch

    options = resolve_compiler_options(compiler_options, model)
    start_jit = jax.jit(start, static_argnums=(3,))
    body_jit = jax.jit(body, static_argnums=(9,), donate_argnums=(0,), compiler_options=options)
    finish_jit = jax.jit(finish)

    def python_epoch(params, state, opt_state, x_all, y_all, rows, n_valid, key, active=True, *, on_step=None):
        """The epoch; ``on_step(s, params, state)`` (optional) runs after step s = 1, 2, ... of it."""
        size = rows.shape[0]
        bs = min(batch_size, size)
        order, extra = start_jit(params, key, n_valid, size)
        carry = (params, state, opt_state) + extra
        n_steps = jnp.asarray(n_valid, jnp.int32) // bs
        live_steps = int(n_valid) // bs if on_step is not None else 0  # one host read per epoch, not per step
        active = jnp.asarray(active)
        for s in range(size // bs):
            carry = body_jit(carry, jnp.int32(s), order, rows, x_all, y_all, key, n_steps, active, bs)
            if s < live_steps:
                on_step(s + 1, carry[0], carry[1])
        return finish_jit(carry)

    return python_epoch


def _per_sample(fn):
    """A batch-mean function turned into per-sample values (each sample as a batch of one)."""
    return jax.vmap(lambda o, t: fn(o[None], t[None]))


def make_eval_fn(model, loss, *, metrics=(), eval_batch_size: int = 1024, batch_sharding=None, kernels=None):
    """``evaluate(params, state, x_all, y_all, rows, n_valid) -> {"loss": ..., metric: ...}`` (not jitted).

    The loss and metrics are computed per sample (each a batch mean over one
    sample) and averaged over the ``n_valid`` first ``rows``, in chunks of at most
    ``eval_batch_size`` (padding is masked out), with ``train=False``. With a ``batch_sharding``
    over several devices each chunk is split by ``jax.shard_map`` (when it divides) and the
    per-shard sums added with ``psum``.
    """
    _, loss_fn = resolve_loss(loss)
    use = step_kernels(kernels, batch_sharding)
    fns = [("loss", loss_fn)] + list(resolve_metrics(metrics))
    per_sample = [(n, _per_sample(f)) for n, f in fns]

    def evaluate(params, state, x_all, y_all, rows, n_valid):
        size = rows.shape[0]
        chunk = max(1, min(eval_batch_size, size))
        n_chunks = -(-size // chunk)
        pad = n_chunks * chunk - size
        rows_p = jnp.concatenate([rows, jnp.zeros((pad,), rows.dtype)]) if pad else rows
        valid = jnp.arange(n_chunks * chunk) < n_valid

        def chunk_sums(params, state, xb, yb, w):
            with ops.using(use):
                out, _ = model.apply(params, state, xb, train=False, key=None)
            return {n: jnp.sum(jnp.where(w > 0, f(out, yb).astype(jnp.float32), 0.0)) for n, f in per_sample}

        sums_of = chunk_sums
        if _partitioned(batch_sharding) and chunk % batch_sharding.mesh.size == 0:
            from jax.sharding import PartitionSpec as P

            axis = batch_axis(batch_sharding)
            sums_of = jax.shard_map(lambda *a: jax.lax.psum(chunk_sums(*a), axis), mesh=batch_sharding.mesh,
                                    in_specs=(P(), P(), P(axis), P(axis), P(axis)), out_specs=P(), check_vma=False)

        def body(sums, c):
            idx = jax.lax.dynamic_slice(rows_p, (c * chunk,), (chunk,))
            w = jax.lax.dynamic_slice(valid, (c * chunk,), (chunk,)).astype(jnp.float32)
            xb, yb = x_all[idx], y_all[idx]
            part = sums_of(params, state, xb, yb, w)
            return {n: sums[n] + part[n] for n in sums}, None

        sums, _ = jax.lax.scan(body, {n: jnp.zeros((), jnp.float32) for n, _ in per_sample},
                               jnp.arange(n_chunks, dtype=jnp.int32))
        n = jnp.maximum(n_valid, 1).astype(jnp.float32)
        return {k: jnp.where(n_valid > 0, v / n, jnp.nan) for k, v in sums.items()}

    return evaluate


_CACHE: "collections.OrderedDict[tuple, tuple[Any, tuple]]" = collections.OrderedDict()
_CACHE_SIZE = 32


def _hkey(x):
    """A cache-key part: the value when hashable (a model spec, a name), else its identity."""
    if isinstance(x, (list, tuple)):
        return tuple(_hkey(v) for v in x)
    try:
        hash(x)
    except TypeError:
        return ("id", id(x))
    return x


def cached_jit(kind: str, build: Callable[[], Any], *parts) -> Any:
    """The compiled function ``build()`` for this (kind, parts), reused across calls (LRU, 32 entries).

    ``fit`` calls for the same model spec, loss, optimizer object, batch size...
    (folds of a cross-validation, a resumed run) then share one ``jax.jit``
    object and so its compilation cache. The parts are kept alive with the entry,
    so an identity used in the key cannot be recycled while it is cached. The key includes the
    `jigcnn.ops` configuration in force, which the builders capture.
    """
    key = (kind, ops.current()) + tuple(_hkey(p) for p in parts)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit[0]
    fn = build()
    _CACHE[key] = (fn, parts)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return fn
