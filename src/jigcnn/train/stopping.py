"""Early stopping: the paper's rule and the usual patience rule.

A rule is an immutable config plus a small JSON-able state dict (so it goes into
checkpoints). ``fit`` calls ``rule.init()`` once and ``rule.update(state, epoch,
value)`` after every epoch with the monitored value (e.g. ``val_accuracy``).

**The paper's rule** (Sec. 4.4.1 / 5.2: "learned on each fold ten times in a row
with tolerance 7"; "we abandoned a next cycle of learning on a current fold as
soon as validation accuracy decay was observed a few times in a row. This number
of times, the tolerance, was chosen 7, with the number of consecutive processing
of a folder 10"). Our reading, implemented exactly:

* a *pass* is one epoch over the fold's training part; at most ``passes`` (10);
* after each pass the validation metric is compared with the previous pass's;
  strictly worse counts one "degradation", anything else resets the count to 0;
* the fold is abandoned when the count reaches ``tolerance`` (7) -- i.e. after 7
  consecutive degradations;
* the weights of the last pass are kept (the paper does not say it rolled back);
  ``restore_best=True`` keeps the best pass instead.

With the defaults the rule can only fire at pass 8 or later (7 degradations need
8 passes), so it mostly caps training at 10 passes.

**Patience**: stop after ``patience`` epochs without an improvement of more than
``min_delta`` over the best value so far, and (by default) restore the best
epoch's weights.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from jigcnn.train.step import resolve_metrics


class Decision(NamedTuple):
    """What a rule says after an epoch."""

    stop: bool
    reason: str | None
    improved: bool  # a new best value (for restore_best)


def resolve_mode(monitor: str, mode: str) -> str:
    """'min' or 'max'; ``"auto"`` is max for accuracy-like names, min otherwise (loss, mape, mae)."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    return "max" if "acc" in monitor else "min"


def _better(a, b, mode, delta=0.0) -> bool:
    """Whether `a` beats `b` by more than `delta` (NaN never beats anything)."""
    if a != a:
        return False
    if b is None or b != b:
        return True
    return a < b - delta if mode == "min" else a > b + delta


@dataclasses.dataclass(frozen=True)
class PaperStopping:
    """Up to ``passes`` epochs; abandon after ``tolerance`` consecutive validation degradations."""

    passes: int = 10
    tolerance: int = 7
    monitor: str | None = None  # None: fit picks val_<first metric> (or val_loss)
    mode: str = "auto"
    restore_best: bool = False

    def __post_init__(self):
        if self.passes < 1 or self.tolerance < 1:
            raise ValueError(f"PaperStopping: passes and tolerance must be >= 1, got {self.passes}, {self.tolerance}")

    @property
    def max_epochs(self) -> int:
        """The epoch cap: ``passes``."""
        return self.passes

    def init(self) -> dict:
        """The rule's state before the first epoch (JSON-able)."""
        return {"prev": None, "worse": 0, "best": None, "best_epoch": None}

    def update(self, st: dict, epoch: int, value: float, monitor: str) -> tuple[dict, Decision]:
        """(new state, decision) after ``epoch`` whose ``monitor`` value is ``value``."""
        mode = resolve_mode(monitor, self.mode)
        value = float(value)
        worse = st["prev"] is not None and _better(st["prev"], value, mode)
        improved = _better(value, st["best"], mode)
        st = {
            "prev": value,
            "worse": st["worse"] + 1 if worse else 0,
            "best": value if improved else st["best"],
            "best_epoch": epoch if improved else st["best_epoch"],
        }
        if st["worse"] >= self.tolerance:
            return st, Decision(True, f"paper rule: {monitor} got worse {st['worse']} times in a row "
                                      f"(tolerance {self.tolerance}) at pass {epoch}", improved)
        if epoch >= self.passes:
            return st, Decision(True, f"paper rule: completed {self.passes} passes", improved)
        return st, Decision(False, None, improved)


@dataclasses.dataclass(frozen=True)
class Patience:
    """Stop after ``patience`` epochs without improvement; restore the best weights (by default)."""

    patience: int = 5
    monitor: str | None = None
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best: bool = True
    max_epochs: int | None = None

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"Patience: patience must be >= 1, got {self.patience}")

    def init(self) -> dict:
        """The rule's state before the first epoch (JSON-able)."""
        return {"best": None, "best_epoch": None, "wait": 0}

    def update(self, st: dict, epoch: int, value: float, monitor: str) -> tuple[dict, Decision]:
        """(new state, decision) after ``epoch`` whose ``monitor`` value is ``value``."""
        mode = resolve_mode(monitor, self.mode)
        value = float(value)
        improved = _better(value, st["best"], mode, self.min_delta)
        if improved:
            st = {"best": value, "best_epoch": epoch, "wait": 0}
        else:
            st = {**st, "wait": st["wait"] + 1}
        if st["wait"] >= self.patience:
            return st, Decision(True, f"patience: no improvement of {monitor} for {self.patience} epochs "
                                      f"(best {st['best']:.6g} at epoch {st['best_epoch']})", improved)
        if self.max_epochs is not None and epoch >= self.max_epochs:
            return st, Decision(True, f"patience: reached max_epochs={self.max_epochs}", improved)
        return st, Decision(False, None, improved)


def default_monitor(metrics, has_val: bool, has_test: bool) -> str:
    """``val_<first metric>`` (or ``val_loss``); test, then train when there is no validation part."""
    prefix = "val" if has_val else "test" if has_test else "train"
    names = [n for n, _ in resolve_metrics(metrics)]
    return f"{prefix}_{names[0] if names else 'loss'}"


def resolve_epochs_and_monitor(epochs, stopping, metrics, has_val: bool, has_test: bool, who: str):
    """(max_epochs, monitor): `epochs` capped by the rule's `max_epochs`, and the history key the rule watches."""
    max_epochs = epochs if epochs is not None else getattr(stopping, "max_epochs", None)
    if max_epochs is None:
        raise ValueError(f"{who}: give epochs= or a stopping rule with max_epochs")
    if stopping is not None and getattr(stopping, "max_epochs", None):
        max_epochs = min(max_epochs, stopping.max_epochs)
    monitor = None
    if stopping is not None:
        monitor = stopping.monitor or default_monitor(metrics, has_val, has_test)
    return max_epochs, monitor
