"""BLAS threading policy: small mixed-model problems factor fastest on one thread."""

from __future__ import annotations

import contextlib

# Below this dense dimension one BLAS thread is as fast as two or faster: InstEval's
# 1157-wide block took 1.86 s with two threads and 1.91 s with one on an idle machine,
# but 18-35 s with two under CPU contention (OpenBLAS threads spin), 2-3 s with one.
_MULTITHREAD_DIM = 4000


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
