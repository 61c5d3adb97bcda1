"""The live policy's reading check for a model with inter-occasion variability."""

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
