"""The live policy: reading checks for a model with inter-occasion variability; when assessments run."""

import numpy as np

from assimilation import Dose, online
from assimilation.events import Reading
from mipdstream.service.policy import check_request
from tests.assimilation.test_occasions import IOV_MODEL


def test_a_reading_after_a_dose_that_opens_an_occasion_is_checked_against_fresh_kappa():
    """Before the check, the posterior's κ (iov_CL) is what the levels of the last occasion
    taught; a dose 48 h later opens a new occasion, so the κ the check uses are redrawn
    (spread ≈ the prior's 0.35, not the posterior's); a dose within the gap keeps them."""
    doses = [Dose(0.0, 100.0), Dose(48.0, 100.0)]
    events = doses + [Reading(50.0, 4.1), Reading(58.0, 1.6)]
    before = online.update(online.init(IOV_MODEL, {}, 0, 2000, "pf"), events)
    kappa = online.particles(before).log_params[:, 2]
    later = Dose(96.0, 100.0)
    sample, acting, _ = check_request(before, doses + [later], [Reading(100.0, 3.0)])
    assert later in acting
    renewed = np.asarray(sample.log_params)[:, 2]
    assert abs(np.std(renewed) - 0.35) < 0.03 and not np.allclose(renewed, kappa)
    np.testing.assert_array_equal(np.asarray(sample.log_params)[:, :2], online.particles(before).log_params[:, :2])
    within = Dose(60.0, 100.0)
    sample, _, _ = check_request(before, doses + [within], [Reading(62.0, 3.0)])
    np.testing.assert_array_equal(np.asarray(sample.log_params)[:, 2], kappa)


def test_assessments_wait_for_a_gap_in_assimilation_but_not_forever(monkeypatch):
    """While assimilation has work in hand the policy thread holds its regimen searches back,
    for at most MAX_DEFER_S at a time; when assimilation is idle they run at once."""
    import time

    from mipdstream.config import Settings
    from mipdstream.service import policy

    monkeypatch.setattr(policy, "MAX_DEFER_S", 0.2)
    evaluator = policy.PolicyEvaluator(Settings())
    busy = [True]
    evaluator._assimilation_busy = lambda: busy[0]
    assert evaluator._defer()
    time.sleep(0.1)
    assert evaluator._defer()
    time.sleep(0.15)
    assert not evaluator._defer()  # waited long enough: one assessment goes
    assert evaluator._defer()  # and the next waits again
    busy[0] = False
    assert not evaluator._defer()
