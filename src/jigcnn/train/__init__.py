"""Training: pure jitted steps, the epoch loop, early stopping, cross-validation, parallel folds, checkpoints."""

from jigcnn.train.checkpoint import CheckpointMismatch
from jigcnn.train.cv import (
    PROTOCOLS,
    CVResult,
    as_augment,
    ProtocolSplits,
    cross_validate,
    expand_dataset,
    kfold_indices,
    protocol_splits,
    split_validation,
)
from jigcnn.train.loop import DivergenceError, FitResult, History, default_monitor, fit
from jigcnn.train.parallel import (
    FoldsResult,
    batch_sharding,
    data_parallel_train_step,
    fit_folds_vmapped,
    fold_keys,
    make_mesh,
    replicate,
    replicated,
    shard_batch,
    stack_trees,
    unstack_tree,
)
from jigcnn.train.step import (
    METRICS,
    epoch_order,
    layer_finite,
    make_epoch_fn,
    make_eval_fn,
    make_grad_fn,
    make_train_step,
    make_update,
)
from jigcnn.train.stopping import Decision, PaperStopping, Patience

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
