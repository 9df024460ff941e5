"""Flat parameter buffers: aligned allocation, packing named tensors into a model's layout
(fastrnn._layout) and checking them. All tensors live in one flat buffer, so clipping, zeroing
and the optimizer are each one loop over `spec.num_params` values.
"""
import numpy as np

from ._layout import LEGACY_NAMES, ModelSpec
from ._layout import unflatten as _unflatten

PARAM_NAMES = LEGACY_NAMES  # min-char-rnn's model: Wxh Whh Why bh by
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def vanilla(hidden_size, vocab_size):
    """The spec of min-char-rnn's model (one tanh layer)."""
    return ModelSpec("rnn", vocab_size, hidden_size)


def param_shapes(hidden_size, vocab_size):
    """min-char-rnn's model's {name: shape}."""
    return vanilla(hidden_size, vocab_size).shapes()


def num_params(hidden_size, vocab_size):
    return vanilla(hidden_size, vocab_size).num_params


def flat_anchor(spec):
    """The value of a flat buffer that must start a 64-byte line: Whh's (H*V) in min-char-rnn's
    layout, whose rows one sequence streams every step; 0 in the stacked layout, whose slots
    are all 16-value aligned."""
    return spec.hidden_size * spec.vocab_size if spec.legacy else 0


ALIGN = 64  # bytes: one cache line, and one AVX-512 vector


def aligned_empty(n, dtype, at=0):
    """An uninitialised 1-D numpy array of n values whose value `at` starts a 64-byte line.

    numpy places large arrays 16 bytes past a page boundary, so every 64-byte vector load of the
    kernels straddled two cache lines: a matrix streamed from the L2 cache ran at 0.6 of the
    speed. The flat parameters and the buffers shaped like them are placed with `at` = H*V, so
    that Whh, the matrix one sequence streams on every step, starts a line (and so does each of
    its rows when H is a multiple of 16); scratch buffers with at=0."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + ALIGN, dtype=np.uint8)
    shift = (-(raw.ctypes.data + at * dtype.itemsize)) % ALIGN
    return raw[shift:shift + n * dtype.itemsize].view(dtype)


def aligned_zeros(n, dtype, at=0):
    """aligned_empty, zeroed."""
    a = aligned_empty(n, dtype, at)
    a[...] = 0
    return a


def unflatten(flat, spec):
    """Named views (no copies) into a flat buffer, in layout order."""
    return _unflatten(flat, spec)


def zeros_like_params(spec, dtype):
    """A zeroed, aligned flat numpy buffer for `spec` (see flat_anchor)."""
    return aligned_zeros(spec.num_params, dtype, at=flat_anchor(spec))


def pack(tensors, spec, dtype):
    """A new flat numpy buffer of `dtype` holding the named tensors (already shape-checked);
    padding stays zero."""
    flat = zeros_like_params(spec, dtype)
    views = unflatten(flat, spec)
    for name, value in tensors.items():
        views[name][...] = value
    return flat


def check_dtype(dtype):
    """The numpy dtype for a user's dtype argument ("float32"/"float64"), or a ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


PRECISIONS = ("fp32", "bf16")  # the matrix products' operands (see CharRNN's precision)


def check_precision(precision, dtype):
    """The checked precision name: "fp32", or "bf16" (which needs a float32 model), or a
    ValueError."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and np.dtype(dtype) != np.float32:
        raise ValueError(f"precision='bf16' needs dtype='float32' (its products accumulate in "
                         f"float32 and its master parameters are float32), got dtype="
                         f"{np.dtype(dtype).name!r}")
    return precision


def check_tensors(tensors, spec, what="params"):
    """Checks a dict of the spec's named tensors: exact keys, shapes and real values."""
    names = spec.names
    if not isinstance(tensors, dict):
        raise TypeError(f"{what} must be a dict with keys {', '.join(names)}, "
                        f"got {type(tensors).__name__}")
    missing = [k for k in names if k not in tensors]
    extra = [k for k in tensors if k not in names]
    if missing or extra:
        raise ValueError(f"{what} must have exactly the keys {', '.join(names)}; "
                         f"missing {missing}, unexpected {extra}")
    out = {}
    for name, shape in spec.shapes().items():
        a = np.asarray(tensors[name])
        if a.shape != shape:
            raise ValueError(f"{what}[{name!r}] has shape {a.shape}; expected {shape} "
                             f"({spec.describe()}, vocab_size={spec.vocab_size})")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{what}[{name!r}] must hold real numbers, got dtype {a.dtype}")
        out[name] = a
    return out


def check_fits(dtype, allow_inf=(), **values):
    """Raises ValueError if a positive hyperparameter (lr=..., eps=...) is no longer positive
    and finite once rounded to the model's float dtype: 1e-50 is 0 and 1e300 is inf as a
    float32. Names in allow_inf may round to inf; None values are skipped. The compiled kernels
    make the same check."""
    dtype = np.dtype(dtype)
    for name, value in values.items():
        if value is None:
            continue
        with np.errstate(over="ignore", under="ignore"):
            x = dtype.type(value)
        if not (x > 0 and (name in allow_inf or np.isfinite(x))):
            raise ValueError(f"{name}={value!r} is {float(x)!r} as a {dtype.name}; choose a "
                             f"value the model's dtype can hold")
