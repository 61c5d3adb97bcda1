"""Stacking one-patient posteriors into a batch and splitting it again loses nothing."""

import jax
import numpy as np
import pytest

from assimilation import Dose, load_model
from assimilation.events import Reading
from assimilation.online import init, update
from mipdstream.service.batching import split, stack

MODEL = load_model("one_compartment_oral")


@pytest.mark.parametrize("method", ["pf", "enkf", "map"])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_split_of_stack_is_the_identity_and_the_batch_updates_each_patient(method, n):
    posteriors = [update(init(MODEL, {"WT": 60.0 + 5 * i}, i, 64, method), [Dose(0.0, 300.0), Reading(1.0 + i, 6.0)])
                  for i in range(n)]
    batch = stack(posteriors)
    assert batch.n_patients == n and jax.tree.leaves(batch.state)[0].shape[0] >= n  # padded to its bucket
    for before, after in zip(posteriors, split(batch)):
        assert after.covariates == before.covariates and after.n_patients == 1
        for a, b in zip(jax.tree.leaves(before.state), jax.tree.leaves(after.state)):
            assert isinstance(b, np.ndarray)  # host arrays: slicing them compiles nothing
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # one batched update equals each patient updated alone
    events = [[Reading(6.0 + i, 4.0 - 0.2 * i)] for i in range(n)]
    together = split(update(batch, events))
    for posterior, patient_events, batched in zip(posteriors, events, together):
        alone = update(posterior, patient_events)
        for a, b in zip(jax.tree.leaves(alone.state), jax.tree.leaves(batched.state)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
