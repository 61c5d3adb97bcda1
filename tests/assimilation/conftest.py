"""JAX on CPU for these tests, with a persistent compilation cache so that repeated runs do not
pay XLA compile times again (the cache key includes the jax version and the program)."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "mipdstream-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
