"""UMAP and pynndescent, imported with numba's on-disk cache switched on for their kernels.

Most of their numba functions are compiled without `cache=True`, so every process that draws a
map compiles them again: measured on the 2-core machine, 11 s before the first UMAP of 60 points
and 40 s before the first pynndescent graph, every time `ceta2vec report` runs. With the cache on,
the first process compiles and stores them (next to the library, or in numba's user-wide cache
directory where that is read-only) and every later one loads them in well under a second. numba
keys each entry by the function's source file, its types and the CPU, so an upgraded library or
another machine compiles afresh rather than loading a stale kernel.
"""

from __future__ import annotations

import sys
import warnings
from functools import lru_cache
from types import ModuleType

PACKAGES = ("umap", "pynndescent")


@lru_cache(maxsize=1)
def cached_umap() -> ModuleType:
    """`import umap`, its and pynndescent's numba kernels set to cache on disk before any compiles."""
    import numba
    import pynndescent  # noqa: F401  (umap imports it too; its kernels are what the kNN graph compiles)
    import umap
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    # A kernel numba cannot cache (pynndescent's nn_descent holds dynamic globals) is compiled as
    # before; numba says so at every compile, which tells a user nothing they can act on.
    warnings.filterwarnings("ignore", message=".*Cannot cache compiled function", category=numba.NumbaWarning)
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in PACKAGES:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(value._cache, NullCache):
                value.enable_caching()
    return umap
