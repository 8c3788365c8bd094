"""Equation 3 of the Quick-Tune paper: EI at the next fidelity over the incumbent at that fidelity, per second."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qtt_cli.optimizer.acquisition import best_at_fidelity, cost_aware_score, expected_improvement


def _pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def test_expected_improvement_matches_the_closed_form_by_hand():
    # mean 52, std 2, best 50: z = 1, EI = 2·Φ(1) + 2·φ(1)
    # mean 50, std 1, best 50: z = 0, EI = φ(0) = 0.3989...
    # mean 47, std 3, best 50: z = -1, EI = -3·Φ(-1) + 3·φ(-1)
    ei = expected_improvement(np.array([52.0, 50.0, 47.0]), np.array([2.0, 1.0, 3.0]), np.array([50.0, 50.0, 50.0]))
    expected = [2 * _cdf(1) + 2 * _pdf(1), _pdf(0), -3 * _cdf(-1) + 3 * _pdf(-1)]
    assert ei == pytest.approx(expected, rel=1e-12)
    assert ei[0] == pytest.approx(2.1666309, abs=1e-6) and ei[1] == pytest.approx(0.3989423, abs=1e-6)


def test_expected_improvement_margin_and_zero_std():
    # xi raises the bar: EI(mean 52, best 49, xi 1) equals EI(mean 52, best 50)
    assert expected_improvement(np.array([52.0]), np.array([2.0]), 49.0, xi=1.0) == pytest.approx(
        expected_improvement(np.array([52.0]), np.array([2.0]), 50.0)
    )
    # without uncertainty EI is the plain improvement, never negative
    assert list(expected_improvement(np.array([53.0, 48.0]), np.zeros(2), 50.0)) == [3.0, 0.0]


def test_score_divides_expected_improvement_by_predicted_cost():
    ei, cost = np.array([1.0, 1.0, 3.0]), np.array([2.0, 4.0, 3.0])
    assert list(cost_aware_score(ei, cost)) == pytest.approx([0.5, 0.25, 1.0])
    assert list(cost_aware_score(ei, cost, cost_exponent=0.0)) == [1.0, 1.0, 3.0]  # plain EI
    assert list(cost_aware_score(ei, cost, cost_exponent=0.5)) == pytest.approx([1 / 2**0.5, 0.5, 3 / 3**0.5])


def test_near_zero_cost_predictions_are_clipped_so_they_cannot_dominate():
    # median cost 10 s, floor 1 % of it = 0.1 s: a 1e-6 s prediction counts as 0.1 s
    scores = cost_aware_score(np.ones(3), np.array([1e-6, 10.0, 10.0]), cost_floor=0.01)
    assert scores == pytest.approx([10.0, 0.1, 0.1])
    with pytest.raises(ValueError, match="positive"):
        cost_aware_score(np.ones(2), np.array([1.0, 0.0]))


def test_incumbent_is_the_best_value_at_exactly_that_epoch():
    curves = [np.array([10.0, 20.0, 30.0]), np.array([15.0, 18.0]), np.array([])]
    assert list(best_at_fidelity(curves, np.array([1, 2, 3]))) == [15.0, 20.0, 30.0]


def test_incumbent_falls_back_to_the_best_at_any_lower_epoch_then_to_the_floor():
    # nobody reached epoch 4 or 7: the best value observed at any lower epoch counts (90, at epoch 1), not
    # the best at the highest observed epoch (35 at epoch 3), as in Section 4.3 of the paper
    curves = [np.array([90.0, 40.0, 35.0]), np.array([10.0, 50.0])]
    assert list(best_at_fidelity(curves, np.array([4, 7]))) == [90.0, 90.0]
    # epochs someone reached still use the best at exactly that epoch
    assert list(best_at_fidelity(curves, np.array([2, 3, 4]))) == [50.0, 35.0, 90.0]
    assert list(best_at_fidelity([np.array([]), np.array([])], np.array([1, 3]))) == [0.0, 0.0]
    assert list(best_at_fidelity([], np.array([2]), floor=-1.0)) == [-1.0]
