"""JAX's persistent compilation cache, switched on by an entry point (the CLI, the benchmarks), never on
import: it is process-global JAX configuration (``tests/test_session.py``).

With it, a rerun of the same program in a new process loads the compiled executable from disk instead
of compiling it (``benchmarks/run.py`` measures the rerun). JAX skips programs that compile in under
``jax_persistent_cache_min_compile_time_secs`` (1 s by default); every program of a toymodels run is
small, so :func:`enable` sets it to 0. The directory holds executables, so it is created private (0700).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_DIR", "enable"]

DEFAULT_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "toymodels" / "jax"


def enable(path: str | Path | None = None) -> Path:
    """Cache every compiled program of this process under ``path`` (default :data:`DEFAULT_DIR`)."""
    import jax

    path = Path(path if path is not None else DEFAULT_DIR).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
