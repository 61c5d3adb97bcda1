"""Stack one-patient posteriors into one vmapped batch, and split the batch again.

The filters' arrays are shaped (patients, ...); a live service keeps one posterior per
patient and gathers those that have new events into a single update. The batch is padded to
the posterior's bucket size by repeating its first row (padding rows get no events).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from assimilation.events import bucket
from assimilation.online import Posterior


def batch_size(n: int) -> int:
    """Rows of a batch of n patients: 1, 4, 16, 64, 256, ... A live service sees every batch
    size between 1 and its maximum sooner or later, and each size compiles the filter's step
    and resampling anew (seconds each); powers of four halve the number of sizes of powers of
    two for at most 4x padding (and padding rows cost only compute)."""
    return bucket(n, factor=4)


def stack(posteriors: Sequence[Posterior]) -> Posterior:
    """One posterior over the patients of ``posteriors`` (same model, method and options)."""
    first = posteriors[0]
    for other in posteriors[1:]:
        if (other.model, other.method, other.options) != (first.model, first.method, first.options):
            raise ValueError("only posteriors of the same model, method and options can be batched")
    rows = [p.state for p in posteriors]
    rows += [rows[0]] * (batch_size(len(rows)) - len(rows))
    state = jax.tree.map(lambda *leaves: np.concatenate([np.asarray(leaf)[:1] for leaf in leaves]), *rows)
    covariates = tuple(c for p in posteriors for c in p.covariates[:1])
    return first._replace(state=state, n_patients=len(posteriors), covariates=covariates)


def split(posterior: Posterior) -> list[Posterior]:
    """The one-patient posteriors of a batch (padding rows dropped), as host (numpy) arrays.

    Host arrays because slicing them compiles nothing: sliced as device arrays, every
    ``leaf[i : i + 1]`` is a dispatch and, for each new ``i`` and batch shape, a compilation
    (thousands before a live service reaches its steady state; one jitted split per batch
    shape instead takes seconds to compile at 64 patients). Each row is copied, so that a
    patient's posterior does not keep its whole batch's buffers alive. The filters' jitted
    steps take numpy input; :func:`stack` builds the next batch from it on the host.
    """
    host = jax.tree.map(np.asarray, posterior.state)
    return [
        posterior._replace(state=jax.tree.map(lambda leaf: leaf[i : i + 1].copy(), host), n_patients=1,
                           covariates=posterior.covariates[i : i + 1])
        for i in range(posterior.n_patients)
    ]
