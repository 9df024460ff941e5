"""Thread control. One number rules every backend: the compiled kernels split a large enough
batch into that many groups of rows, each run on its own thread (OpenMP, inside the kernel call;
they call no BLAS), while the numpy backend's BLAS and torch's CPU thread pool get the same
number."""
import numbers
import os
import warnings

from ._optional import loaded_torch

_current = None
_fallback = None  # what get_num_threads gives before any set_num_threads (read once)


def _default():
    """$FASTRNN_NUM_THREADS as a number (None when unset); anything but a positive integer is
    refused, whichever call reads it first (a training step, a sampler, set_num_threads)."""
    env = os.environ.get("FASTRNN_NUM_THREADS")
    if env is None:
        return None
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"FASTRNN_NUM_THREADS must be a positive integer, got {env!r}")
    return n


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def set_num_threads(n=None):
    """Sets the threads fastrnn uses (the compiled kernels' threads, numpy's BLAS and torch's CPU
    pool); returns the number set.

    n=None takes $FASTRNN_NUM_THREADS if set, else the number of available cores. More threads
    than cores is allowed but warned about (it only slows things down).
    """
    global _current
    from threadpoolctl import threadpool_limits
    if n is None:
        n = _default()
    cores = _cores()
    if n is None:
        n = cores
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    if n > cores:
        warnings.warn(f"threads={n} is more than the {cores} available cores", stacklevel=2)
    threadpool_limits(limits=int(n), user_api="blas")
    _current = int(n)
    apply_to_torch()
    return _current


def apply_to_torch():
    """Gives torch's CPU thread pool the number last set, if one was set and torch is loaded."""
    torch = loaded_torch()
    if _current is not None and torch is not None:
        torch.set_num_threads(_current)


def get_num_threads():
    """The number of threads the compiled kernels use: the one last set, else
    $FASTRNN_NUM_THREADS, else the number of available cores (those two read at the first call
    and remembered, like OpenMP's OMP_NUM_THREADS: every training step asks, and reading the
    environment and the affinity mask took 1-1.6 us, 2% of a min-char iteration)."""
    global _fallback
    if _current is not None:
        return _current
    if _fallback is None:
        env = _default()
        _fallback = env if env is not None else _cores()
    return _fallback
