"""Stack one-patient posteriors into one vmapped batch, and split the batch again.

The filters' arrays are shaped (patients, ...); a live service keeps one posterior per
patient and gathers those that have new events into a single update. The batch is padded to
the posterior's bucket size by repeating its first row (padding rows get no events).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from assimilation.events import bucket
from assimilation.online import Posterior


def stack(posteriors: Sequence[Posterior]) -> Posterior:
    """One posterior over the patients of ``posteriors`` (same model, method and options)."""
    first = posteriors[0]
    for other in posteriors[1:]:
        if (other.model, other.method, other.options) != (first.model, first.method, first.options):
            raise ValueError("only posteriors of the same model, method and options can be batched")
    rows = [p.state for p in posteriors]
    rows += [rows[0]] * (bucket(len(rows)) - len(rows))
    state = jax.tree.map(lambda *leaves: jnp.concatenate([leaf[:1] for leaf in leaves]), *rows)
    covariates = tuple(c for p in posteriors for c in p.covariates[:1])
    return first._replace(state=state, n_patients=len(posteriors), covariates=covariates)


def split(posterior: Posterior) -> list[Posterior]:
    """The one-patient posteriors of a batch (padding rows dropped)."""
    return [
        posterior._replace(
            state=jax.tree.map(lambda leaf: leaf[i : i + 1], posterior.state),
            n_patients=1,
            covariates=posterior.covariates[i : i + 1],
        )
        for i in range(posterior.n_patients)
    ]
