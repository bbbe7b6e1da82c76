"""Drift calibration of stored class Gaussians: none (DMC) / mean-shift (SDC-style) / OT (DMC-OT)."""
from dmc.calibration.bench import bench_ot
from dmc.calibration.calibrate import METHODS, CalibrationConfig, calibrate_gaussians
from dmc.calibration.drift import (
    SOLVERS,
    mean_shift_drift,
    ot_drift,
    ot_plan,
    squared_distances,
    transfer_drift_mean_shift,
    transfer_drift_ot,
)

__all__ = [
    "METHODS",
    "SOLVERS",
    "CalibrationConfig",
    "bench_ot",
    "calibrate_gaussians",
    "mean_shift_drift",
    "ot_drift",
    "ot_plan",
    "squared_distances",
    "transfer_drift_mean_shift",
    "transfer_drift_ot",
]
