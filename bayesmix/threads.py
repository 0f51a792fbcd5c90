"""BLAS threading policy: small mixed-model problems factor fastest on one thread."""

from __future__ import annotations

import contextlib

# Above this dense dimension a second BLAS thread pays for itself; below it, thread
# hand-offs dominate (and under CPU contention OpenBLAS spins: 0.3 ms becomes 70 ms).
_MULTITHREAD_DIM = 800


_controller = None


def blas_threads_for(dense_dim: int):
    """A context that keeps BLAS single-threaded for problems whose dense blocks are small."""
    global _controller
    if dense_dim >= _MULTITHREAD_DIM:
        return contextlib.nullcontext()
    if _controller is None:  # scanning the loaded libraries costs ~3 ms: do it once
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def dense_dimension(compiled) -> int:
    """Size of the dense Schur complement the engine factors: all but the first term, plus X and y."""
    return sum(t.q for t in compiled.terms[1:]) + compiled.p + 1
