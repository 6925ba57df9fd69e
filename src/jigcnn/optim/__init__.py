"""Optimisation: optimizers by name, what learns, one-cycle schedules, and freezeconnect / dropconnect (paper Sec. 5.5.1)."""

from jigcnn.optim.connect import (
    RESAMPLE_POLICIES,
    DropConnectState,
    FreezeConnectState,
    dropconnect,
    dropconnect_params,
    find_states,
    freezeconnect,
)
from jigcnn.optim.optimizers import (
    OPTIMIZER_NAMES,
    carry_state,
    exclude_biases,
    freeze,
    freeze_layers,
    make_optimizer,
    optimizer_hyperparameters,
)
from jigcnn.optim.schedules import onecycle_schedule, onecycle_sgd, step_schedule, step_sgd
from jigcnn.optim.select import (
    all_of,
    any_of,
    biases_only,
    kernels_only,
    layer_names,
    layers,
    path_names,
    resolve_rates,
    resolve_where,
)

__all__ = [
    "RESAMPLE_POLICIES",
    "DropConnectState",
    "FreezeConnectState",
    "dropconnect",
    "dropconnect_params",
    "find_states",
    "freezeconnect",
    "OPTIMIZER_NAMES",
    "carry_state",
    "exclude_biases",
    "freeze",
    "freeze_layers",
    "make_optimizer",
    "optimizer_hyperparameters",
    "onecycle_schedule",
    "onecycle_sgd",
    "step_schedule",
    "step_sgd",
    "all_of",
    "any_of",
    "biases_only",
    "kernels_only",
    "layer_names",
    "layers",
    "path_names",
    "resolve_rates",
    "resolve_where",
]
