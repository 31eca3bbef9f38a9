"""TPME and the Pareto front against hand-computed numbers."""

import math

import pytest

from recsys.report.plots import pareto_front
from recsys.report.tpme import TPMEWeights, min_max, tpme


def test_min_max_scales_to_unit_interval_and_constant_to_zero():
    assert min_max([10, 20, 30]) == [0.0, 0.5, 1.0]
    assert min_max([7, 7, 7]) == [0.0, 0.0, 0.0]


def test_tpme_hand_computed():
    # t: 10 20 30 -> 0 .5 1 ; p: 100 100 300 -> 0 0 1 ; m: 1 3 2 -> 0 1 .5
    scores = tpme([10, 20, 30], [100, 100, 300], [1, 3, 2])
    assert scores == pytest.approx([0.0, 0.45 * 0.5 + 0.45 * 1.0, 0.45 * 1.0 + 0.10 * 1.0 + 0.45 * 0.5])
    assert scores == pytest.approx([0.0, 0.675, 0.775])


def test_tpme_constant_column_contributes_nothing():
    # params constant -> 0; t: 0 1 ; m: 1 0
    assert tpme([1.0, 3.0], [500, 500], [8.0, 4.0]) == pytest.approx([0.45, 0.45])
    assert tpme([2.0], [10], [3.0]) == [0.0]


def test_tpme_missing_values_are_null_and_do_not_shift_the_others():
    # B is missing its time: A and C are normalised between themselves only (B's params ignored)
    scores = tpme([10, None, 30], [100, 5, 300], [1, 3, 2])
    assert scores[1] is None
    assert scores[0] == pytest.approx(0.0) and scores[2] == pytest.approx(1.0)
    with_nan = tpme([10, 20, 30], [100, 100, 300], [1, float("nan"), 2])
    assert with_nan[1] is None and with_nan[0] == 0.0 and with_nan[2] == pytest.approx(1.0)
    assert tpme([None], [1], [1]) == [None]
    assert tpme([], [], []) == []


def test_tpme_custom_weights():
    w = TPMEWeights(time=0.2, params=0.3, memory=0.5)
    assert tpme([10, 20, 30], [100, 100, 300], [1, 3, 2], w) == pytest.approx([0.0, 0.6, 0.75])
    assert tpme([1, 2], [9, 1], [5, 5], TPMEWeights.of([0, 1, 0])) == pytest.approx([1.0, 0.0])


@pytest.mark.parametrize("bad", [(0.5, 0.5, 0.5), (0.45, 0.10, 0.40), (1.2, -0.2, 0.0), (math.nan, 0.5, 0.5)])
def test_weights_are_validated(bad):
    with pytest.raises(ValueError):
        TPMEWeights(*bad)


def test_weights_of_sequence():
    assert TPMEWeights.of(["0.45", "0.1", "0.45"]) == TPMEWeights()
    with pytest.raises(ValueError, match="3 weights"):
        TPMEWeights.of([0.5, 0.5])


def test_tpme_length_mismatch_raises():
    with pytest.raises(ValueError, match="lengths differ"):
        tpme([1, 2], [1], [1, 2])


def test_pareto_front_minimises_cost_maximises_quality():
    # (2, .3) twice: neither dominates the other; (3, .2) is dominated by (2, .3)
    assert pareto_front([1, 2, 3, 2], [0.1, 0.3, 0.2, 0.3]) == [True, True, False, True]
    assert pareto_front([], []) == []
