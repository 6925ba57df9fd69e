"""What happens after an epoch, shared by :func:`jigcnn.train.fit` and :func:`jigcnn.train.fit_folds_vmapped`.

One run (``fit``'s run, or one fold of ``fit_folds_vmapped``) carries a small
:class:`RunState`; after every epoch the caller hands its host-side epoch
statistics and evaluations to :func:`after_epoch`, which

1. checks for **divergence**: a non-finite step inside the epoch (the epoch
   function reports the first bad step and layers), or a training loss that
   grew by orders of magnitude over the run (:func:`loss_blew_up`); either gives
   the same message format (:func:`divergence_message`) and ends the run;
2. builds the epoch's **history record** (``epoch``, ``train_loss``,
   ``train_<metric>``, ``train_steps``, ``test_*``, ``val_*``, ``time``, the
   diagnostic's entries, ``wall_time``) and appends it;
3. runs the **diagnostic** hook (``diagnostic.on_epoch_end(epoch, record, params, state)``);
4. updates the **stopping rule** (:class:`~jigcnn.train.stopping.PaperStopping`,
   :class:`~jigcnn.train.stopping.Patience`) and keeps the **best weights** for
   ``restore_best``;
5. marks the run completed after ``max_epochs``;
6. writes the **checkpoint** (through the caller's ``checkpoint(run, meta)``;
   never for a diverged epoch, so the last good checkpoint stays on disk).

The caller owns the device arrays; :func:`after_epoch` only sees them through
the ``weights()`` callable (this run's ``(params, state)``), so a stacked fold
and a plain run go through the same code.

The history, :class:`DivergenceError` and the progress bar live here too:
this is the lowest module that needs them (``loop`` and ``parallel`` import it).
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

#: A run whose epoch training loss exceeds ``LOSS_GROWTH_LIMIT * max(|initial loss|, LOSS_FLOOR)`` diverged.
LOSS_GROWTH_LIMIT = 1e4
#: The smallest reference loss of the growth rule (a net that starts almost perfect must not trip it on noise).
LOSS_FLOOR = 1.0


class History:
    """Per-epoch records (dicts of floats: epoch, train_/test_/val_ metrics, time, wall_time).

    ``history["val_loss"]`` is the list of that metric over the epochs;
    ``history.records`` the list of per-epoch dicts.
    """

    def __init__(self, records: Sequence[dict] | None = None):
        self.records: list[dict] = [dict(r) for r in records or ()]
        self.diagnostics: dict[str, list] | None = None  # per-step Fig. 4 MAVs (fit's diagnostic, unit="step")

    def append(self, record: dict) -> None:
        """Add one epoch's record (copied)."""
        self.records.append(dict(record))

    def __getitem__(self, name: str) -> list:
        return [r.get(name) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def keys(self) -> list[str]:
        """Every key of any record, in first-seen order."""
        seen = {}
        for r in self.records:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def to_dict(self) -> dict[str, list]:
        """{key: column} over all records."""
        return {k: self[k] for k in self.keys()}

    @property
    def last(self) -> dict:
        """The last record ({} when empty)."""
        return self.records[-1] if self.records else {}

    def metrics(self, exclude=("time", "wall_time")) -> list[dict]:
        """The records without the timing entries (what must match between identical runs)."""
        return [{k: v for k, v in r.items() if k not in exclude} for r in self.records]

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, keys={self.keys()})"


class DivergenceError(FloatingPointError):
    """Training diverged (a non-finite step, or a loss blown up by orders of magnitude); ``.result`` holds the run.

    ``.epoch``; ``.step`` (0-based within the epoch) and ``.layers`` for a non-finite step (None and
    () for a blown-up loss); ``.result``: the :class:`~jigcnn.train.loop.FitResult` (or, from
    ``fit_folds_vmapped(on_divergence="raise")``, the :class:`~jigcnn.train.parallel.FoldsResult`).
    """

    def __init__(self, message: str, result: Any = None, epoch: int | None = None,
                 step: int | None = None, layers: Sequence[str] = ()):
        super().__init__(message)
        self.result, self.epoch, self.step, self.layers = result, epoch, step, tuple(layers)


def progress_bar(progress, total, initial):
    """A tqdm bar over epochs, or None (``progress`` False, stderr not a TTY unless "always", no tqdm)."""
    if not progress:
        return None
    if progress != "always" and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True, leave=True)


# ---------------------------------------------------------------- divergence


def divergence_message(epoch: int, *, step: int | None = None, loss_finite: bool = True,
                       layers: Sequence[str] = (), loss: float | None = None, initial_loss: float | None = None,
                       limit: float | None = None) -> str:
    """The one divergence message: a non-finite step (``step`` given) or a blown-up loss (``loss`` given)."""
    if step is not None:
        parts = []
        if not loss_finite:
            parts.append("the loss is non-finite")
        if layers:
            parts.append(f"non-finite gradient (or update) in layer(s) {', '.join(layers)}")
        return (f"training diverged at epoch {epoch}, step {step} (0-based within the epoch): "
                f"{'; '.join(parts) or 'non-finite values'}; params kept at their last good values"
                " (the step was not applied)")
    return (f"training diverged at epoch {epoch}: the training loss {loss:.3g} is more than {limit:.3g} times "
            f"max(|initial loss|, {LOSS_FLOOR:g}) (initial loss {initial_loss:.3g}); params are this epoch's "
            "(finite, not rolled back)")


def describe_bad_step(stats: dict, epoch: int) -> tuple[str, int, list[str]]:
    """(message, step, layers) for an epoch whose ``stats["bad_step"] >= 0`` (host values of one run)."""
    step = int(stats["bad_step"])
    layers = sorted(k for k, v in stats["bad_grad_finite"].items() if not bool(v))
    msg = divergence_message(epoch, step=step, loss_finite=bool(stats["bad_loss_finite"]), layers=layers)
    return msg, step, layers


def loss_blew_up(loss: float, initial_loss: float | None, limit: float | None = LOSS_GROWTH_LIMIT) -> bool:
    """Whether ``loss > limit * max(|initial_loss|, LOSS_FLOOR)`` (False without a finite reference or limit)."""
    if limit is None or initial_loss is None or not math.isfinite(initial_loss):
        return False
    return bool(loss > limit * max(abs(initial_loss), LOSS_FLOOR))


# ---------------------------------------------------------------- one run's bookkeeping


class EpochRules(NamedTuple):
    """The per-run constants of the bookkeeping (the same for every epoch)."""

    max_epochs: int
    metric_names: tuple = ()
    stopping: Any = None  # PaperStopping / Patience / None
    monitor: str | None = None  # the history key the rule watches
    restore_best: bool = False
    loss_growth_limit: float | None = LOSS_GROWTH_LIMIT
    who: str = "fit"  # names the caller in errors


class RunState(NamedTuple):
    """One run's host-side state between epochs (``history`` is appended in place)."""

    history: History
    stop_state: dict | None = None
    best_epoch: int | None = None
    best: Any = None  # copied (params, state) of the best epoch, with restore_best
    stopped_reason: str | None = None
    stop_kind: str | None = None  # "rule", "epochs" (ran out of epochs) or "diverged"
    initial_loss: float | None = None  # the untrained net's training loss (the growth rule's reference)


class EpochOutcome(NamedTuple):
    """What :func:`after_epoch` decided: ``stop`` the run (``reason``), and why (``diverged``: which step/layers)."""

    record: dict | None  # the history record (None: a non-finite epoch is not recorded)
    stop: bool
    reason: str | None
    diverged: bool = False
    step: int | None = None  # the first non-finite step (None for a blown-up loss)
    layers: tuple = ()
    improved: bool = False  # a new best monitored value


def new_run(rules: EpochRules, initial_loss: float | None = None) -> RunState:
    """A fresh run: empty history, the stopping rule's initial state."""
    stop_state = rules.stopping.init() if rules.stopping is not None else None
    return RunState(History(), stop_state, initial_loss=None if initial_loss is None else float(initial_loss))


def checkpoint_meta(run: RunState, epoch: int) -> dict:
    """The JSON metadata a checkpoint stores for ``run`` after ``epoch`` (what :func:`resume_run` reads)."""
    return {"epoch": epoch, "history": run.history.records, "stop_state": run.stop_state,
            "best_epoch": run.best_epoch, "stopped_reason": run.stopped_reason, "stop_kind": run.stop_kind,
            "initial_loss": run.initial_loss}


def resume_run(meta: dict, rules: EpochRules, best=None) -> tuple[RunState, int]:
    """(run, first epoch to run) from a checkpoint's metadata; ``best``: the checkpoint's best (params, state).

    A run that only ran out of epochs goes on when more are asked for now; a run
    stopped by its rule (or diverged) stays stopped. Checkpoints written before
    the growth rule's reference was stored fall back to the first epoch's loss.
    """
    history = History(meta["history"])
    start = int(meta["epoch"]) + 1
    reason, kind = meta.get("stopped_reason"), meta.get("stop_kind")
    if kind == "epochs" and start <= rules.max_epochs:
        reason, kind = None, None
    initial = meta.get("initial_loss")
    if initial is None and len(history):
        initial = history.records[0].get("train_loss")
    best_epoch = meta.get("best_epoch")
    run = RunState(history, meta.get("stop_state"), best_epoch,
                   best if rules.restore_best and best_epoch is not None else None, reason, kind,
                   None if initial is None else float(initial))
    return run, start


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def after_epoch(run: RunState, stats: dict, evals: dict, *, epoch: int, rules: EpochRules, time: float,
                wall_clock: Callable[[], float], weights: Callable[[], tuple] | None = None, diagnostic=None,
                checkpoint: Callable[[RunState, dict], None] | None = None) -> tuple[RunState, EpochOutcome]:
    """One run's bookkeeping after ``epoch``: divergence, history record, diagnostic, stopping, best, checkpoint.

    ``stats``: the epoch function's statistics of this run as host values (``loss``, the metrics,
    ``steps``, ``bad_step``, ``bad_loss_finite``, ``bad_grad_finite``); ``evals``: {"test"/"val":
    {"loss": ..., metric: ...}} host values; ``time``: the epoch's seconds; ``wall_clock()``: seconds
    since the run began (read when the record is complete); ``weights()``: this run's current
    ``(params, state)`` (read by the diagnostic and, on a new best with ``restore_best``, copied);
    ``diagnostic``: an object with ``on_epoch_end(epoch, record, params, state) -> dict`` (its
    ``unit == "step"``: also ``history()``, stored as ``history.diagnostics``); ``checkpoint(run,
    meta)``: writes the run's checkpoint (not called for a diverged epoch).
    """
    if int(stats["bad_step"]) >= 0:
        msg, step, layers = describe_bad_step(stats, epoch)
        run = run._replace(stopped_reason=msg, stop_kind="diverged")
        return run, EpochOutcome(None, True, msg, diverged=True, step=step, layers=tuple(layers))
    record = {"epoch": epoch, "train_loss": float(stats["loss"])}
    record.update({f"train_{m}": float(stats[m]) for m in rules.metric_names})
    record["train_steps"] = int(stats["steps"])
    for part, ev in evals.items():
        record.update({f"{part}_{k}": float(v) for k, v in ev.items()})
    record["time"] = time
    if loss_blew_up(record["train_loss"], run.initial_loss, rules.loss_growth_limit):
        msg = divergence_message(epoch, loss=record["train_loss"], initial_loss=run.initial_loss,
                                 limit=rules.loss_growth_limit)
        record["wall_time"] = wall_clock()
        run.history.append(record)
        run = run._replace(stopped_reason=msg, stop_kind="diverged")
        return run, EpochOutcome(record, True, msg, diverged=True)
    if diagnostic is not None:
        params, state = weights()
        record.update(diagnostic.on_epoch_end(epoch, record, params, state))
        if getattr(diagnostic, "unit", "epoch") == "step":
            run.history.diagnostics = diagnostic.history()
    record["wall_time"] = wall_clock()
    run.history.append(record)
    reason, kind, improved = None, None, False
    stop_state, best_epoch, best = run.stop_state, run.best_epoch, run.best
    if rules.stopping is not None:
        if rules.monitor not in record:
            raise ValueError(f"{rules.who}: stopping monitors {rules.monitor!r}, not in the history keys "
                             f"{sorted(record)}")
        stop_state, decision = rules.stopping.update(stop_state, epoch, record[rules.monitor], rules.monitor)
        improved = bool(decision.improved)
        if improved:
            best_epoch = epoch
            if rules.restore_best:
                best = _copy(weights())
        if decision.stop:
            reason, kind = decision.reason, "rule"
    if reason is None and epoch >= rules.max_epochs:
        reason, kind = f"completed {rules.max_epochs} epochs", "epochs"
    run = run._replace(stop_state=stop_state, best_epoch=best_epoch, best=best, stopped_reason=reason,
                       stop_kind=kind)
    if checkpoint is not None:
        checkpoint(run, checkpoint_meta(run, epoch))
    return run, EpochOutcome(record, reason is not None, reason, improved=improved)


def check_divergence_args(on_divergence: str, loss_growth_limit, who: str) -> None:
    """Refuse an ``on_divergence`` other than "raise"/"stop" and a ``loss_growth_limit`` not None or a number > 1."""
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"{who}: on_divergence must be 'raise' or 'stop', got {on_divergence!r}")
    if loss_growth_limit is None:
        return
    ok = isinstance(loss_growth_limit, numbers.Real) and not isinstance(loss_growth_limit, bool)
    if not ok or not math.isfinite(loss_growth_limit) or loss_growth_limit <= 1:
        raise ValueError(f"{who}: loss_growth_limit must be None (no growth rule) or a finite number > 1, "
                         f"got {loss_growth_limit!r}")
