import math

import numpy as np
import pytest

from dmc import metrics

NAN = float("nan")
R = np.array([[90.0, NAN, NAN], [70.0, 80.0, NAN], [50.0, 60.0, 100.0]])


def test_incremental_accuracy_is_sample_weighted():
    counts = [10, 30, 60]
    acc = metrics.incremental_accuracies(R, counts)
    assert acc[0] == pytest.approx(90.0)
    assert acc[1] == pytest.approx((70 * 10 + 80 * 30) / 40)
    assert acc[2] == pytest.approx((50 * 10 + 60 * 30 + 100 * 60) / 100)
    # equal counts reduce to the mean of the row
    assert metrics.incremental_accuracies(R, [1, 1, 1])[2] == pytest.approx(70.0)


def test_avg_last_forgetting_bwt():
    counts = [1, 1, 1]
    assert metrics.last(R, counts) == pytest.approx(70.0)
    assert metrics.average_incremental(R, counts) == pytest.approx((90 + 75 + 70) / 3)
    # forgetting: task0 max(90,70)-50=40, task1 max(80)-60=20 -> 30
    assert metrics.forgetting(R) == pytest.approx(30.0)
    # bwt: (50-90 + 60-80)/2 = -30
    assert metrics.bwt(R) == pytest.approx(-30.0)


def test_old_new_harmonic():
    on = metrics.old_new(R, [10, 30, 60], 2)
    assert on["new"] == pytest.approx(100.0)
    assert on["old"] == pytest.approx((50 * 10 + 60 * 30) / 40)
    assert on["harmonic"] == pytest.approx(2 * on["old"] * 100 / (on["old"] + 100))
    first = metrics.old_new(R, [10, 30, 60], 0)
    assert first["old"] is None and first["harmonic"] is None


def test_single_task_and_bad_shape():
    one = np.array([[42.0]])
    s = metrics.summary(one, [5])
    assert s["avg"] == s["last"] == 42.0 and s["forgetting"] == 0.0 and s["bwt"] == 0.0
    with pytest.raises(ValueError):
        metrics.summary(np.zeros(3), [1])


def test_nan_to_none():
    out = metrics.nan_to_none(R)
    assert out[0][1] is None and out[2][2] == 100.0
    assert not any(isinstance(v, float) and math.isnan(v) for row in out for v in row)
