"""The paper's Sec. 5.4 tools: the Fig. 4 MAV report, the Eq. 4/5/5a bounds and automatic Eq. 3 calibration."""

from jigcnn.diagnostics.bounds import (
    Bounds,
    LayerBound,
    amplitudes_of,
    bounds,
    loss_derivative_bound,
    paper_bounds,
)
from jigcnn.diagnostics.calibrate import Calibration, calibrate_init, scale_kernels
from jigcnn.diagnostics.report import (
    COLUMNS,
    Diagnostic,
    DiagnosticRecorder,
    LayerRow,
    diagnose,
    diagnostics_to_history,
    make_diagnose,
)

__all__ = [
    "COLUMNS", "Diagnostic", "DiagnosticRecorder", "LayerRow", "diagnose", "diagnostics_to_history", "make_diagnose",
    "Bounds", "LayerBound", "amplitudes_of", "bounds", "loss_derivative_bound", "paper_bounds",
    "Calibration", "calibrate_init", "scale_kernels",
]
