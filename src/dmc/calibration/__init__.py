"""Drift calibration of stored class Gaussians: none (DMC) / mean-shift (SDC-style) / OT (DMC-OT)."""
from dmc.calibration.bench import bench_ot
from dmc.calibration.calibrate import calibrate_gaussians
from dmc.calibration.drift import (
    mean_shift_drift,
    ot_drift,
    ot_plan,
    squared_distances,
    transfer_drift_mean_shift,
    transfer_drift_ot,
)
from dmc.config import SOLVERS, CalibrationConfig

__all__ = [
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
