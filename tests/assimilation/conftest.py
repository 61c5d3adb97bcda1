"""JAX on CPU for these tests, with a persistent compilation cache so that repeated runs do not
pay XLA compile times again (the cache key includes the jax version and the program).

``MIPD_TEST_JAX_CACHE=0`` turns the cache off. A crash inside jaxlib while a cached executable
is read back is not the cache's fault: the process ran out of memory mappings, which
tests/conftest.py prevents.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

if os.environ.get("MIPD_TEST_JAX_CACHE", "1") != "0":
    jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "mipdstream-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
