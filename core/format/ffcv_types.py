"""A fix for ffcv 1.0.2's OSCacheManager, shared by everything that builds an ffcv Loader (core's loaders,
data_tools' readers): `mend_os_cache_types()`, once per process, before the first Loader.

ffcv's OSCacheManager.state_type (memory_managers/os_cache.py) sets `mutable = False` on `numba.uint8[::1]`, the
interned type of every writable C-contiguous uint8 vector: its key, hence its hash, changes while it sits in
dispatchers' overload dicts (as an argument type of the image decoders' compiled functions: ffcv's, and
core/data/seeded_crop.py's). When such a dispatcher is collected, its finalizer walks that dict and fails: the
"Exception ignored in: <finalize object> ... KeyError: (Array(uint8, 1, 'C', True, ...), ...)" traces printed
after a second Loader in one process (numba 0.68.1: the second loader's state_type mutates the type the first
loader's decoders were compiled with; tests/test_loader.py reproduces it in a subprocess). ffcv calls state_type
only in OSCacheManager.compile_reader, for the reader's signature `nb.uint8[::1](nb.uint64, state_type)`, whose
return type became read-only only through that same mutation. Both are replaced by versions that build the
read-only types instead. Process-wide, not per loader: the mutated type is numba's shared one, so any plain ffcv
Loader in the process would break the dispatchers of all others.
"""

from __future__ import annotations


def mend_os_cache_types() -> None:
    """Replaces OSCacheManager.state_type and compile_reader (module docstring); idempotent."""
    import numba as nb
    import numpy as np
    from ffcv.memory_managers.os_cache import OSCacheManager
    from ffcv.pipeline.compiler import Compiler

    if getattr(OSCacheManager, "_types_mended", False):
        return

    def state_type(self: OSCacheManager) -> nb.types.Tuple:
        data = nb.types.Array(nb.uint8, 1, "C", readonly=True)  # the memory map, opened mode='r'
        table = nb.types.Array(nb.uint64, 1, "C")  # the sorted pointers and sizes of the allocation table
        return nb.types.Tuple([data, table, table])

    def compile_reader(self: OSCacheManager):
        state = state_type(self)

        def read(address, mem_state):  # ffcv's own
            size = mem_state[2][np.searchsorted(mem_state[1], address)]
            return mem_state[0][address:address + size]

        return Compiler.compile(read, state.types[0](nb.uint64, state))

    OSCacheManager.state_type = property(state_type)
    OSCacheManager.compile_reader = compile_reader
    OSCacheManager._types_mended = True
