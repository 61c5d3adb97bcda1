"""The posterior of a model set as one weighted particle sample, for PTA, risk and the regimen search.

Bayesian model averaging (:mod:`assimilation.averaging`) keeps one posterior per model and
their probabilities w_m. Its posterior predictive of any exposure metric m is the mixture
Σ_m w_m p(m | M_m, data), so a particle i of member m carries the weight w_m · w_i|m:

    log w_i = log w_m + log w_i|m        (w_i|m normalised within the member)

and every weighted sum over particles — PTA, risk, the mean, the expected utility — is the
w-weighted sum of the members' (tests/dosing_policy/test_mixture.py); quantiles are those of
the mixture. The policy's code then runs unchanged on the concatenated sample, provided one
model can propagate every particle: the members must share their state layout (log-parameter
names, compartments, dynamics, dosing attributes, and the function of each analyte), which
:func:`policy_model` checks. The library's vancomycin models share it (each is the same
two-compartment + ISF-sensor structure with its own population; a one-compartment model fits
it as the limit Q → 0, benchmarks/models/vancomycin_roberts2011.py). Members of different
structure would need to be evaluated one by one and their PTAs mixed by weight; that is not
done here, and :func:`policy_model` says which part differs.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from assimilation import Model

from .sample import PosteriorSample

__all__ = ["policy_model", "mixture_sample", "from_averaged"]


def _same(a, b) -> bool:
    """Equal values; dataclasses (the dynamics, hashed by identity for jit) field by field;
    functions only when they are the same function."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # arrays or objects without a usable equality: not the same
        return False


def policy_model(models: Sequence[Model]) -> Model:
    """The model that evaluates a mixture of ``models``' particles (the first), after checking
    that every member has its state layout; raises ValueError naming what differs."""
    first = models[0]
    for model in models[1:]:
        checks = [
            ("log-parameter names", first.parameter_names, model.parameter_names),
            ("compartments", first.compartments, model.compartments),
            ("dynamics", first.dynamics, model.dynamics),
            ("initial amounts", first.initial_amounts, model.initial_amounts),
            ("dose compartment", first.dose_compartment, model.dose_compartment),
            ("bioavailability", first.bioavailability, model.bioavailability),
            ("lag time", first.lag_time, model.lag_time),
            ("occasions", first.occasions, model.occasions),
            ("analytes", tuple(a.name for a in first.analytes), tuple(a.name for a in model.analytes)),
        ]
        checks += [(f"prediction of analyte {a.name!r}", a.predict, b.predict) for a, b in zip(first.analytes, model.analytes)]
        for what, mine, theirs in checks:
            if not _same(mine, theirs):
                raise ValueError(f"models {first.name!r} and {model.name!r} differ in their {what}: one sample cannot hold "
                                 "both posteriors; evaluate each and mix the results by weight")
    return first


def mixture_sample(samples: Sequence[PosteriorSample], weights: Sequence[float], dtype=jnp.float32) -> PosteriorSample:
    """One sample of Σ_m w_m · sample_m: the members' particles concatenated, log-weights
    log w_m + each member's normalised log-weights. ``weights`` need not be normalised; every
    sample must be at the same time."""
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(samples),) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"weights: expected {len(samples)} non-negative numbers with a positive sum, got {weights.tolist()}")
    times = [float(s.time) for s in samples]
    if max(times) - min(times) > 1e-6 * max(1.0, abs(times[0])):
        raise ValueError(f"the members' samples are at different times {times} h")
    with np.errstate(divide="ignore"):
        log_w = np.log(weights / weights.sum())
    log_weights = []
    for sample, lw in zip(samples, log_w):
        own = np.asarray(sample.log_weights, np.float64)
        log_weights.append(own - np.logaddexp.reduce(own) + lw)
    return PosteriorSample(
        jnp.asarray(np.concatenate([np.asarray(s.log_params) for s in samples]), dtype),
        jnp.asarray(np.concatenate([np.asarray(s.amounts) for s in samples]), dtype),
        jnp.asarray(np.concatenate(log_weights), dtype), jnp.asarray(times[0], dtype),
    )


def from_averaged(averaged, patient: int = 0, dtype=jnp.float32) -> tuple[Model, PosteriorSample]:
    """(the model to evaluate with, the mixture sample) of one patient of an
    :class:`assimilation.averaging.Averaged`: what :func:`.recommend.recommend`, ``evaluate``
    and ``forecast`` take in place of one model's posterior."""
    from assimilation import averaging  # the policy reads the engine's state, never the other way round

    model = policy_model(averaged.models)
    mixture = averaging.particles(averaged, patient)
    return model, PosteriorSample(jnp.asarray(mixture.log_params, dtype), jnp.asarray(mixture.amounts, dtype),
                                  jnp.asarray(mixture.log_weights, dtype), jnp.asarray(mixture.time, dtype))
