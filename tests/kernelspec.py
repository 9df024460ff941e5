"""What each Python-visible kernel wrapper in fastrnn._kernels takes, how to build a valid call,
how to spoil one argument of it, and what the call must compute (from the numpy reference).

Shared by test_errors.py (every wrapper x every buffer x every kind of damage) and test_fuzz.py
(hypothesis draws the shapes, values and damage).
"""
import math

import numpy as np

from fastrnn import _kernels as K
from fastrnn.backends.numpy_backend import NumpyBackend

ID = np.dtype(np.intc)  # the kernels' `int`
U = np.dtype(np.float64)  # uniforms are always double

# name: (positional arguments in order, written buffers, optional buffers)
WRAPPERS = {
    "loss_and_grads": (("params", "grads", "inputs", "targets", "h", "work", "hidden_size",
                        "vocab_size", "dh0"), {"grads", "h", "work", "dh0"}, {"dh0"}),
    "forward_loss": (("params", "inputs", "targets", "h", "work", "hidden_size", "vocab_size"),
                     {"h", "work"}, {"targets"}),
    "train_step": (("params", "grads", "mem", "inputs", "targets", "h", "work", "hidden_size",
                    "vocab_size", "optimizer", "lr", "eps", "clip"),
                   {"params", "grads", "mem", "h", "work"}, set()),
    "adagrad_update": (("params", "grads", "mem", "lr", "eps", "clip"), {"params", "mem"}, set()),
    "sample": (("params", "h", "uniforms", "temperature", "greedy", "out", "work", "hidden_size",
                "vocab_size"), {"h", "out", "work"}, set()),
}
SCALARS = {"hidden_size", "vocab_size", "optimizer", "lr", "eps", "clip", "temperature", "greedy"}
# buffers whose length may exceed the minimum (work always; uniforms beyond len(out))
AT_LEAST = {"work", "uniforms"}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
OTHER_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8,
                np.complex128, np.bool_, object]
# ways to spoil a buffer argument (see `layout`); "alias" makes it overlap another buffer
DAMAGE = ("dtype", "short", "long", "ndim_up", "ndim_down", "strided", "reversed", "fortran",
          "readonly", "unaligned", "none", "alias")
BAD_IDS = (-1, -2**31, 2**31 - 1)  # plus V and V + 1, which depend on the call
DEFAULT_SCALARS = {"optimizer": 0, "lr": 0.1, "eps": 1e-8, "clip": 5.0, "temperature": 1.0,
                   "greedy": False}


def num_params(H, V):
    return 2 * H * V + H * H + H + V


def work_size(B, T, H, V):
    return (T + 1) * B * H + T * B * V + T * B * H


def buffers(name):
    args, _, _ = WRAPPERS[name]
    return [a for a in args if a not in SCALARS]


def float_buffers(name):
    """The buffers of the model's float dtype (those an "alias" damage can pair up)."""
    return [a for a in buffers(name) if a in ("params", "grads", "mem", "h", "dh0", "work")]


def shape_and_dtype(arg, name, dtype, B, T, H, V, n):
    """The shape and dtype a valid `arg` of wrapper `name` has."""
    if arg in ("params", "grads", "mem"):
        return (num_params(H, V),), dtype
    if arg in ("inputs", "targets"):
        return (B, T), ID
    if arg in ("h", "dh0"):
        return ((H,) if name == "sample" else (B, H)), dtype
    if arg == "work":
        return ((V + H,) if name == "sample" else (work_size(B, T, H, V),)), dtype
    if arg == "uniforms":
        return (n,), U
    if arg == "out":
        return (n,), ID
    raise KeyError(arg)


def layout(shape, dtype, damage=None, other_dtype=None):
    """An uninitialised array of `shape` and `dtype`, laid out as `damage` says (None: a plain
    C-contiguous array; "none" returns None)."""
    dtype = np.dtype(dtype)
    if damage in (None, "readonly", "alias"):
        return np.empty(shape, dtype)
    if damage in ("short", "long"):
        return np.empty(tuple(shape[:-1]) + (max(0, shape[-1] + (1 if damage == "long" else -1)),),
                        dtype)
    if damage == "dtype":
        return np.empty(shape, other_dtype)
    if damage == "ndim_up":
        return np.empty((1,) + tuple(shape), dtype)
    if damage == "ndim_down":
        return np.empty(int(np.prod(shape)) if len(shape) == 2 else (), dtype)
    if damage == "none":
        return None
    if damage == "strided":
        return np.empty(tuple(shape[:-1]) + (2 * shape[-1],), dtype)[..., ::2]
    if damage == "reversed":
        return np.empty(shape, dtype)[..., ::-1]
    if damage == "fortran":
        return np.empty(shape, dtype, order="F")
    if damage == "unaligned":  # C-contiguous, one byte off the allocation's alignment
        raw = np.empty(int(np.prod(shape)) * dtype.itemsize + 1, np.uint8)
        return raw[1:].view(dtype).reshape(shape)
    raise KeyError(damage)


def fill(a, arg, V, rng):
    """Fills the (already laid out) array `a` with values that are valid for `arg`."""
    if a.dtype.kind in "iub":
        a[...] = rng.integers(0, max(1, min(V, 2) if a.dtype.kind == "b" else V), a.shape)
    elif arg == "uniforms":
        a[...] = rng.random(a.shape)
    elif arg == "mem":
        a[...] = np.abs(rng.normal(0, 1, a.shape))  # Adagrad's state is a sum of squares
    elif arg == "params":
        a[...] = rng.normal(0, 0.5, a.shape)
    elif arg in ("h", "dh0"):
        a[...] = rng.uniform(-0.9, 0.9, a.shape)
    else:  # grads (read by adagrad_update), work (overwritten)
        a[...] = rng.normal(0, 1, a.shape)


def make_call(name, dtype, B, T, H, V, n=3, seed=0, damage=(), bad_ids=(), scalars=None,
              with_targets=True, with_dh0=False):
    """The arguments (a dict in positional order) of a call of wrapper `name`, valid except for

    damage:  (arg, kind, other_dtype) triples, kind from DAMAGE; "alias" makes `arg` overlap the
             buffer named by other_dtype (one element shared, or the very same array if sizes
             allow)
    bad_ids: (arg, flat_position, value) triples written into inputs/targets after filling
    scalars: overrides of hidden_size, vocab_size, lr, ... (defaults: a valid call)
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    args, written, optional = WRAPPERS[name]
    dmg = {arg: (kind, other) for arg, kind, other in damage}
    a = {}
    for arg in args:
        if arg in SCALARS:
            a[arg] = {"hidden_size": H, "vocab_size": V, **DEFAULT_SCALARS}[arg]
            continue
        if (arg == "targets" and not with_targets) or (arg == "dh0" and not with_dh0):
            a[arg] = None
            continue
        shape, dt = shape_and_dtype(arg, name, dtype, B, T, H, V, n)
        kind, other = dmg.get(arg, (None, None))
        x = layout(shape, dt, kind, other)
        if x is not None:
            fill(x, arg, V, rng)
        a[arg] = x
    for arg, (kind, partner) in dmg.items():
        if (kind == "alias" and a.get(arg) is not None and a.get(partner) is not None
                and a[arg].size and a[partner].size):  # empty buffers cannot overlap
            mine, theirs = a[arg], a[partner]
            if mine.shape == theirs.shape and mine.dtype == theirs.dtype:
                a[arg] = theirs  # the very same buffer
            else:  # a fresh buffer of which the two share exactly one element
                buf = np.empty(theirs.size + mine.size - 1, mine.dtype)
                buf[:theirs.size] = theirs.ravel()
                buf[theirs.size - 1:] = mine.ravel()
                a[partner] = buf[:theirs.size].reshape(theirs.shape)
                a[arg] = buf[theirs.size - 1:].reshape(mine.shape)
    for arg, pos, value in bad_ids:
        if a.get(arg) is not None and a[arg].size and a[arg].dtype == ID:
            a[arg].reshape(-1)[pos % a[arg].size] = value
    for arg, (kind, _) in dmg.items():
        if kind == "readonly" and a.get(arg) is not None:
            a[arg].flags.writeable = False
    a.update({k: v for k, v in (scalars or {}).items() if k in args})
    return a


def call(name, a):
    return getattr(K, name)(*(a[k] for k in WRAPPERS[name][0]))


def hyper_ok(value, dtype, allow_inf=False, allow_none=False):
    """Whether lr/eps/clip/temperature `value` must be accepted for float buffers of `dtype`:
    positive, finite (clip: inf allowed, None allowed), and still so once rounded to `dtype`."""
    if value is None:
        return allow_none
    if not isinstance(value, (int, float)):  # what converts to a C double (bools do)
        return False
    if not (value > 0) or (value == math.inf and not allow_inf):
        return False
    with np.errstate(over="ignore", under="ignore"):
        cast = dtype.type(value)
    return bool(cast > 0) and (allow_inf or bool(np.isfinite(cast)))


def _standard(x):
    """Plain C layout: the strides np.empty would give, aligned."""
    return x.flags.aligned and x.strides == np.empty(x.shape, x.dtype).strides


def verdict(name, a):
    """The kernel contract, restated independently of the kernels: "valid" (must work),
    "either" (a layout the buffer protocol may or may not accept as C-contiguous; if it works it
    must be right) or "invalid" (must raise)."""
    args, written, optional = WRAPPERS[name]
    params = a["params"]
    if params is None or params.dtype not in FLOATS:
        return "invalid"
    dtype, result = params.dtype, "valid"
    for arg in buffers(name):
        x = a[arg]
        if x is None:
            if arg in optional:
                continue
            return "invalid"
        want = ID if arg in ("inputs", "targets", "out") else U if arg == "uniforms" else dtype
        ndim = 2 if arg in ("inputs", "targets") or (arg in ("h", "dh0") and name != "sample") \
            else 1
        if x.dtype != want or x.ndim != ndim or not x.flags.c_contiguous:
            return "invalid"
        if arg in written and not x.flags.writeable:
            return "invalid"
        if not _standard(x):
            result = "either"
    # nothing written may share memory with any other buffer
    present = [k for k in buffers(name) if a[k] is not None and a[k].size]
    for i, k in enumerate(present):
        for j in present[i + 1:]:
            if (k in written or j in written) and np.shares_memory(a[k], a[j]):
                return "invalid"
    for k in ("hidden_size", "vocab_size", "optimizer"):  # C ints
        if k in args and not (isinstance(a[k], int) and -2**31 <= a[k] < 2**31):
            return "invalid"
    if name != "adagrad_update":
        H, V = a["hidden_size"], a["vocab_size"]
        if H <= 0 or V <= 0 or params.size != num_params(H, V):
            return "invalid"
    P = params.size
    for k in ("grads", "mem"):
        if k in args and a[k].size != P:
            return "invalid"
    if name in ("adagrad_update", "train_step"):
        if not (hyper_ok(a["lr"], dtype) and hyper_ok(a["eps"], dtype)
                and hyper_ok(a["clip"], dtype, allow_inf=True, allow_none=True)):
            return "invalid"
    if name == "train_step" and a["optimizer"] != 0:
        return "invalid"
    if name in ("loss_and_grads", "forward_loss", "train_step"):
        x, y = a["inputs"], a["targets"]
        if x.size == 0:
            return "invalid"
        if y is None:
            if name != "forward_loss":
                return "invalid"
        elif y.shape != x.shape or y.min() < 0 or y.max() >= V:
            return "invalid"
        if x.min() < 0 or x.max() >= V:
            return "invalid"
        B, T = x.shape
        if a["h"].shape != (B, H) or a["work"].size < work_size(B, T, H, V):
            return "invalid"
        if a.get("dh0") is not None and a["dh0"].shape != (B, H):
            return "invalid"
    if name == "sample":
        if a["h"].size != H or a["work"].size < V + H:
            return "invalid"
        if not isinstance(a["temperature"], (int, float)):
            return "invalid"  # a C double even when unused
        if not a["greedy"]:
            if a["uniforms"].size < a["out"].size:
                return "invalid"
            if not hyper_ok(a["temperature"], dtype, allow_inf=False):
                return "invalid"
    return result


# -- the reference ----------------------------------------------------------------------------

def _numpy_model(P, H, V):
    m = NumpyBackend(V, H, np.float64)
    m.flat[...] = P
    return m


def reference(name, a):
    """What wrapper `name` must compute from the argument values `a` (float64 copies taken
    before the call): a dict of expected outputs, keyed by argument name or "return"."""
    if name in ("loss_and_grads", "forward_loss", "train_step"):
        m = _numpy_model(a["params"], a["hidden_size"], a["vocab_size"])
        x, h = a["inputs"].astype(np.int64), a["h"].copy()
        y = None if a.get("targets") is None else a["targets"].astype(np.int64)
        if name == "forward_loss":
            return {"return": m.forward_loss(x, y, h), "h": h}
        loss, g, dh0 = m.loss_and_grads(x, y, h, want_dh0=True)
        out = {"return": loss, "grads": g, "h": h}
        if name == "loss_and_grads":
            if a.get("dh0") is not None:
                out["dh0"] = dh0
            return out
        P, M = adagrad(a["params"], g, a["mem"], a["lr"], a["eps"], a["clip"])
        return {**out, "params": P, "mem": M}
    if name == "adagrad_update":
        P, M = adagrad(a["params"], a["grads"], a["mem"], a["lr"], a["eps"], a["clip"])
        return {"params": P, "mem": M}
    raise KeyError(name)


def adagrad(P, G, M, lr, eps, clip):
    g = G if clip is None else np.clip(G, -clip, clip)
    M = M + g * g
    return P - lr * g / np.sqrt(M + eps), M


def check_sample(a, dtype, out, h_after):
    """`out` are ids the sampler drew from the state a["h"]; check each against the float64
    distribution it was drawn from (argmax or the inverse-CDF of a["uniforms"]), and the final
    state against stepping the float64 model over those ids."""
    H, V = a["hidden_size"], a["vocab_size"]
    m = _numpy_model(a["params"], H, V).params
    tol = 1e-9 if dtype == np.float64 else 1e-3
    h = a["h"].copy()
    assert out.dtype == ID and np.all((out >= 0) & (out < V)), out
    for k, idx in enumerate(out):
        z = m["Why"] @ h + m["by"]
        if a["greedy"]:
            assert z[idx] >= z.max() - tol * (1 + abs(z).max())
        else:
            e = np.exp((z - z.max()) / a["temperature"])
            c = np.cumsum(e) / e.sum()
            u = a["uniforms"][k]
            lo = c[idx - 1] if idx > 0 else 0.0
            assert lo <= u + tol and (c[idx] >= u - tol or idx == V - 1), (k, idx, u, c)
        h = np.tanh(m["Wxh"][:, idx] + m["Whh"] @ h + m["bh"])
    np.testing.assert_allclose(h_after, h, rtol=tol, atol=tol)


def close(got, want, dtype):
    """Norm-wise relative agreement, scaled for the dtype's rounding (and overflow-safe)."""
    tol = 1e-9 if dtype == np.float64 else 2e-4
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.all(np.isfinite(want)), "the reference itself overflowed"
    assert np.all(np.isfinite(got)), got
    s = max(1.0, float(np.max(np.abs(want), initial=0)))
    got, want = got / s, want / s
    err = np.linalg.norm(got - want)
    assert err <= tol * (np.linalg.norm(got) + np.linalg.norm(want)) + tol, err


def run_and_check(name, a):
    """Calls wrapper `name` with the arguments `a` and checks the outcome against `verdict`:
    a refused call raised ValueError/TypeError/OverflowError and left every buffer as it was; an
    accepted one computed what the float64 numpy reference computes from the same values and
    left its read-only inputs alone. Returns the exception, or None."""
    v = verdict(name, a)
    written = WRAPPERS[name][1]
    before = {k: np.array(a[k], copy=True) for k in buffers(name) if a[k] is not None}
    try:
        ret = call(name, a)
    except (ValueError, TypeError, OverflowError) as exc:
        assert v != "valid", f"{name}: a valid call was refused: {exc!r}"
        for k, old in before.items():
            assert _same(a[k], old), f"{name} raised {exc!r} but changed {k}"
        return exc
    assert v != "invalid", f"{name}: an invalid call was accepted"
    for k, old in before.items():
        if k not in written:
            assert _same(a[k], old), f"{name} changed its input {k}"
    dtype = a["params"].dtype
    ref = {k: old.astype(np.float64) if old.dtype.kind == "f" else old
           for k, old in before.items()}
    ref.update({k: a[k] for k in SCALARS if k in a})
    if name == "sample":
        check_sample(ref, dtype, a["out"], a["h"])
        assert ret is None
        return None
    for k, want in reference(name, ref).items():
        close(ret if k == "return" else a[k], want, dtype)
    return None


def _same(x, y):
    return x.shape == y.shape and (np.array_equal(x, y, equal_nan=True) if x.dtype.kind in "fc"
                                   else np.array_equal(x, y))
