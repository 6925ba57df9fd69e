"""Training: pure jitted steps, the epoch loop, early stopping, cross-validation, parallel folds, checkpoints.

The names below are imported from their modules on first use (PEP 562), so a script that needs
only ``make_train_step`` does not load the loop, the k-fold protocols or the sharding helpers.

Layering (each module imports only modules above it in this list, also inside functions; no cycles):

* ``epochs`` (history, DivergenceError, progress bar, the per-epoch bookkeeping of every run; imports
  nothing from jigcnn), ``inputs`` (argument normalisation), ``checkpoint``, ``step`` (pure steps);
* ``stopping`` (rules, default monitor) -> step; ``validate`` -> checkpoint;
* ``parallel`` (mesh helpers, vmapped folds) -> step, stopping, epochs, inputs;
* ``loop`` (``fit``) -> step, stopping, epochs, inputs, parallel (the mesh helpers), checkpoint, validate;
* ``cv`` -> loop, parallel, stopping, inputs, validate; ``cli`` -> loop, checkpoint, validate.
"""

import importlib

_MODULE_OF = {
    "CheckpointMismatch": "checkpoint",
    "PROTOCOLS": "cv",
    "CVResult": "cv",
    "as_augment": "inputs",
    "ProtocolSplits": "cv",
    "cross_validate": "cv",
    "expand_dataset": "cv",
    "kfold_indices": "cv",
    "protocol_splits": "cv",
    "split_validation": "cv",
    "DivergenceError": "epochs",
    "History": "epochs",
    "FitResult": "loop",
    "fit": "loop",
    "FoldsResult": "parallel",
    "batch_sharding": "parallel",
    "data_parallel_train_step": "parallel",
    "fit_folds_vmapped": "parallel",
    "fold_keys": "parallel",
    "make_mesh": "parallel",
    "replicate": "parallel",
    "replicated": "parallel",
    "shard_batch": "parallel",
    "stack_trees": "parallel",
    "unstack_tree": "parallel",
    "METRICS": "step",
    "epoch_order": "step",
    "layer_finite": "step",
    "make_epoch_fn": "step",
    "make_eval_fn": "step",
    "make_grad_fn": "step",
    "make_train_step": "step",
    "make_update": "step",
    "Decision": "stopping",
    "PaperStopping": "stopping",
    "Patience": "stopping",
    "default_monitor": "stopping",
}


_SUBMODULES = frozenset(_MODULE_OF.values())


def __getattr__(name):
    """Import `name` (or the submodule `name`) on first use."""
    if name in _SUBMODULES:
        return importlib.import_module(f"jigcnn.train.{name}")
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'jigcnn.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jigcnn.train.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    """The public names and the submodules, imported or not."""
    return sorted(set(globals()) | set(_MODULE_OF) | _SUBMODULES)


__all__ = [
    "CheckpointMismatch",
    "PROTOCOLS", "CVResult", "as_augment", "ProtocolSplits", "cross_validate", "expand_dataset", "kfold_indices",
    "protocol_splits", "split_validation",
    "DivergenceError", "FitResult", "History", "default_monitor", "fit",
    "FoldsResult", "batch_sharding", "data_parallel_train_step", "fit_folds_vmapped", "fold_keys", "make_mesh",
    "replicate", "replicated", "shard_batch", "stack_trees", "unstack_tree",
    "METRICS", "epoch_order", "layer_finite", "make_epoch_fn", "make_eval_fn", "make_grad_fn", "make_train_step",
    "make_update",
    "Decision", "PaperStopping", "Patience",
]
