"""Inter-occasion variability (IOV): parameters that change at random from one occasion to the next.

With IOV on parameter j an individual's value during occasion k is

    log θ_ijk = log θ_ij + κ_ijk,      κ_ijk ~ N(0, σ_j²) independently for every occasion,

(Karlsson MO, Sheiner LB. The importance of modeling interoccasion variability in population
pharmacokinetic analyses. J Pharmacokinet Biopharm 1993;21(6):735-750). The filters carry
the current occasion's κ as extra entries at the end of each particle's log-parameter vector,
so a reading informs both the patient's lasting η and this occasion's κ; when a new occasion
starts, κ is drawn afresh from N(0, σ²) and only what was learned about η carries over. A
model without IOV reads every between-occasion change as a change of the patient, and a
controller built on it over-corrects.

An occasion starts with a dose given more than ``gap`` hours after the previous dose: a
chemotherapy cycle, a new course of an antibiotic. Doses within ``gap`` of each other (the
doses of one course) share an occasion. The first dose a patient receives starts no new
occasion: κ of the first occasion is the prior draw made at initialisation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

__all__ = ["Occasions", "with_fresh_kappa", "occasion_starts", "last_dose_times"]


class Occasions(NamedTuple):
    """IOV declaration of a model.

    Attributes:
        variability: ((parameter name, σ), ...) with σ the SD of κ on the log scale.
        gap: h; a dose more than ``gap`` after the previous dose starts a new occasion.
    """

    variability: tuple[tuple[str, float], ...]
    gap: float = 0.0

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the κ entries of the log-parameter vector (``iov_CL`` for κ on CL)."""
        return tuple(f"iov_{name}" for name, _ in self.variability)

    @property
    def sd(self) -> Float[np.ndarray, " k"]:
        return np.array([sd for _, sd in self.variability], np.float64)

    def starts(self, previous_dose_time, dose_time):
        """True where a dose at ``dose_time`` opens an occasion (``previous`` −inf: first dose)."""
        return np.isfinite(previous_dose_time) & (dose_time - previous_dose_time > self.gap)


def with_fresh_kappa(model, log_params: Float[Array, "... p"], key: Array) -> Float[Array, "... p"]:
    """``log_params`` (any leading axes) of an IOV ``model`` with every κ entry drawn afresh from
    N(0, diag(σ²)): the parameters of a new occasion; the population entries are kept."""
    sd = jnp.asarray(model.occasions.sd, log_params.dtype)
    kappa = jax.random.normal(key, (*log_params.shape[:-1], sd.shape[0]), log_params.dtype) * sd
    return log_params.at[..., model.kappa_slice].set(kappa)


def last_dose_times(dose_times: np.ndarray, dose_amounts: np.ndarray) -> Float[np.ndarray, " P"]:
    """Time of each row's latest recorded dose (−inf if none); arrays (P, K) of a dose table."""
    recorded = np.where(np.asarray(dose_amounts) > 0, np.asarray(dose_times, np.float64), -np.inf)
    return recorded.max(axis=-1) if recorded.shape[-1] else np.full(recorded.shape[:-1], -np.inf)


def occasion_starts(occasions: Occasions, previous: np.ndarray, dose_valid: np.ndarray, dose_time: np.ndarray,
                    dose_amount: np.ndarray) -> Bool[np.ndarray, "P S"]:
    """Which packed dose steps (P, S) open an occasion, given each row's previous dose time."""
    last = np.array(previous, np.float64, copy=True)
    starts = np.zeros(dose_valid.shape, bool)
    for s in range(dose_valid.shape[1]):
        given = dose_valid[:, s] & (dose_amount[:, s] > 0)
        starts[:, s] = given & occasions.starts(last, dose_time[:, s])
        last = np.where(given, np.maximum(last, dose_time[:, s]), last)
    return starts
