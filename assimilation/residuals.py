"""Residual (measurement) error models for one reading y given the model prediction f.

Each model states the density of y | f and its CDF, used for readings below the lower limit
of quantification (LLOQ): a censored reading contributes log P(y < LLOQ | f) (Beal's M3).

For the Kalman-type filters every model also exposes an additive-Gaussian view on a
transformed scale: ``transform(y)`` and ``variance(transform(f))`` such that
transform(y) ≈ transform(f) + ε, ε ~ N(0, variance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import jax.numpy as jnp
from jax.scipy.special import log_ndtr
from jaxtyping import Array, Float

__all__ = ["ResidualError", "Additive", "Proportional", "Combined", "LogNormal"]

_LOG_2PI = 1.8378770664093453
_TINY = 1e-12  # keeps log / division finite when a prediction is exactly zero (before the first dose)


def _normal_logpdf(y, mean, sd):
    z = (y - mean) / sd
    return -0.5 * z * z - jnp.log(sd) - 0.5 * _LOG_2PI


class ResidualError(Protocol):
    def log_likelihood(self, y: Float[Array, ""], f: Float[Array, ""]) -> Float[Array, ""]:
        """log p(y | f)."""

    def log_cdf(self, y: Float[Array, ""], f: Float[Array, ""]) -> Float[Array, ""]:
        """log P(Y ≤ y | f), for censored readings."""

    def sample(self, noise: Float[Array, "..."], f: Float[Array, "..."]) -> Float[Array, "..."]:
        """A reading from standard-normal ``noise`` (the caller owns the random numbers)."""

    def transform(self, y): ...

    def variance(self, h): ...


class _GaussianOnNaturalScale:
    """Shared code for errors that are N(f, sd(f)²) in the natural scale."""

    def log_likelihood(self, y, f):
        return _normal_logpdf(y, f, self.sd(f))

    def log_cdf(self, y, f):
        return log_ndtr((y - f) / self.sd(f))

    def sample(self, noise, f):
        return f + self.sd(f) * noise

    def transform(self, y):
        return y

    def variance(self, h):
        return self.sd(h) ** 2


@dataclass(frozen=True)
class Additive(_GaussianOnNaturalScale):
    """y = f + ε, ε ~ N(0, sigma²); sigma in concentration units (mg/L)."""

    sigma: float

    def sd(self, f):
        return jnp.full_like(f, self.sigma)


@dataclass(frozen=True)
class Proportional(_GaussianOnNaturalScale):
    """y = f (1 + ε), ε ~ N(0, sigma²); sigma is a fraction (0.2 = 20 % CV)."""

    sigma: float

    def sd(self, f):
        return self.sigma * jnp.abs(f) + _TINY


@dataclass(frozen=True)
class Combined(_GaussianOnNaturalScale):
    """y = f + sqrt(additive² + (proportional · f)²) ε (NONMEM's combined error, variances add)."""

    additive: float
    proportional: float

    def sd(self, f):
        return jnp.sqrt(self.additive**2 + (self.proportional * f) ** 2)


@dataclass(frozen=True)
class LogNormal:
    """log y = log f + ε, ε ~ N(0, sigma²) (exponential error); density is that of log y,
    the Jacobian 1/y is constant in f and therefore dropped."""

    sigma: float

    def log_likelihood(self, y, f):
        return _normal_logpdf(jnp.log(jnp.maximum(y, _TINY)), jnp.log(jnp.maximum(f, _TINY)), self.sigma)

    def log_cdf(self, y, f):
        return log_ndtr((jnp.log(jnp.maximum(y, _TINY)) - jnp.log(jnp.maximum(f, _TINY))) / self.sigma)

    def sample(self, noise, f):
        return jnp.maximum(f, _TINY) * jnp.exp(self.sigma * noise)

    def transform(self, y):
        return jnp.log(jnp.maximum(y, _TINY))

    def variance(self, h):
        return jnp.full_like(h, self.sigma**2)
