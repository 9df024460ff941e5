"""Thread control. The compiled kernels parallelise through the BLAS they call (the OpenBLAS that
scipy ships), never with a second thread pool of their own, so one number rules them all; the
torch backend's CPU thread pool follows the same number."""
import numbers
import os
import warnings

from ._optional import loaded_torch

_current = None


def _default():
    env = os.environ.get("FASTRNN_NUM_THREADS")
    if env is None:
        return None
    try:
        return int(env)
    except ValueError:
        raise ValueError(f"FASTRNN_NUM_THREADS must be a positive integer, got {env!r}") from None


def set_num_threads(n=None):
    """Sets the threads used by the kernels' BLAS calls (numpy's and torch's too); returns the
    number set.

    n=None takes $FASTRNN_NUM_THREADS if set, else the number of available cores. More threads
    than cores is allowed but warned about (it only slows things down).
    """
    global _current
    from threadpoolctl import threadpool_limits
    if n is None:
        n = _default()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if n is None:
        n = cores
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    if n > cores:
        warnings.warn(f"threads={n} is more than the {cores} available cores", stacklevel=2)
    # threadpoolctl sets the pools loaded now: load the kernels' BLAS (scipy's) first, or a
    # setting made before the first model would miss it
    import scipy.linalg.cython_blas  # noqa: F401
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
    """The number of BLAS threads the kernels use now."""
    from threadpoolctl import threadpool_info
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return max(counts) if counts else 1
