"""Drift calibration of stored class Gaussians: strategies registered by name (none / mean-shift / OT, at
class or sample level; the linear drift map and OT + linear map, which move covariances in closed form;
`dmc.config.CALIBRATIONS`) over pure drift functions (`drift`)."""
from dmc.calibration.calibrate import (Calibrated, Calibration, LinearMap, MeanShift, NoCalibration,
                                       OptimalTransport, OTLinear, calibrate_gaussians, make_calibration)
from dmc.calibration.drift import (
    Transport,
    fit_linear_drift,
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
    "Calibrated",
    "Calibration",
    "CalibrationConfig",
    "LinearMap",
    "OTLinear",
    "MeanShift",
    "NoCalibration",
    "OptimalTransport",
    "Transport",
    "calibrate_gaussians",
    "fit_linear_drift",
    "make_calibration",
    "mean_shift_drift",
    "ot_drift",
    "ot_plan",
    "squared_distances",
    "transfer_drift_mean_shift",
    "transfer_drift_ot",
]
