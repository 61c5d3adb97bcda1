"""Probability of target attainment and toxicity risk from a weighted particle cloud.

For metric values m_i with normalised weights w_i (last axis = particles):

    PTA  = Σ_i w_i · 1[low ≤ m_i ≤ high]
    risk = Σ_i w_i · (1[m_i > toxic_above] + 1[m_i < toxic_below])   (either bound optional)

and weighted quantiles by the inverse of the weighted empirical CDF.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from .metrics import Target

__all__ = ["Attainment", "attainment", "weighted_quantiles", "weighted_mean_variance"]


class Attainment(NamedTuple):
    pta: Float[Array, "..."]
    risk: Float[Array, "..."]
    mean: Float[Array, "..."]
    quantiles: Float[Array, "... Q"]  # at LEVELS


LEVELS = (0.05, 0.5, 0.95)


def weighted_quantiles(values: Float[Array, "... N"], weights: Float[Array, " N"], levels=LEVELS) -> Float[Array, "... Q"]:
    """Smallest m with weighted CDF(m) ≥ level, per leading index."""
    order = jnp.argsort(values, axis=-1)
    sorted_values = jnp.take_along_axis(values, order, axis=-1)
    cdf = jnp.cumsum(jnp.take_along_axis(jnp.broadcast_to(weights, values.shape), order, axis=-1), axis=-1)
    levels = jnp.asarray(levels, values.dtype)
    index = jnp.sum(cdf[..., None, :] < levels[:, None] * cdf[..., -1:, None], axis=-1)
    return jnp.take_along_axis(sorted_values, jnp.clip(index, 0, values.shape[-1] - 1), axis=-1)


def weighted_mean_variance(values: Float[Array, "... N"], weights: Float[Array, "... N"]):
    mean = jnp.sum(values * weights, axis=-1)
    return mean, jnp.sum(weights * (values - mean[..., None]) ** 2, axis=-1)


def attainment(values: Float[Array, "... N"], weights: Float[Array, " N"], target: Target, levels=LEVELS) -> Attainment:
    """PTA, risk, mean and quantiles of metric ``values`` (particles on the last axis);
    ``levels=None`` skips the quantiles (a sort per row; empty quantile axis)."""
    inside = (values >= target.low) & (values <= target.high)
    pta = jnp.sum(jnp.where(inside, weights, 0.0), axis=-1)
    risk = jnp.zeros_like(pta)
    if target.toxic_above is not None:
        risk = risk + jnp.sum(jnp.where(values > target.toxic_above, weights, 0.0), axis=-1)
    if target.toxic_below is not None:
        risk = risk + jnp.sum(jnp.where(values < target.toxic_below, weights, 0.0), axis=-1)
    quantiles = jnp.zeros((*pta.shape, 0), values.dtype) if levels is None else weighted_quantiles(values, weights, levels)
    return Attainment(pta, risk, jnp.sum(values * weights, axis=-1), quantiles)
