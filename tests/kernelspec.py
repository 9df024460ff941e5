"""What each Python-visible kernel wrapper in fastrnn._kernels takes, how to build a valid call,
how to spoil one argument of it, and what the call must compute (from the numpy reference).

Shared by test_errors.py (every wrapper x every buffer x every kind of damage) and test_fuzz.py
(hypothesis draws the shapes, values and damage).
"""
import math
import operator
import types

import numpy as np

from fastrnn import _kernels as K
from fastrnn._params import vanilla
from fastrnn.backends.numpy_backend import NumpyBackend

ID = np.dtype(np.intc)  # the kernels' `int`
U = np.dtype(np.float64)  # uniforms are always double

# optimizer codes (fastrnn._kernels.OPTIMIZERS) and the state buffers each one uses
ADAGRAD, SGD, RMSPROP, ADAM = 0, 1, 2, 3
OPTIMIZER_NAMES = {ADAGRAD: "adagrad", SGD: "sgd", RMSPROP: "rmsprop", ADAM: "adam"}
STATE_ARGS = {"train_step": ("mem", "mem2"), "optimizer_update": ("state1", "state2"),
              "adagrad_update": ("mem", None)}
SCRATCH_SLACK = 1024  # spare elements of the sampling scratch vectors (placed clear of the weights)

# name: (positional arguments in order, buffers it may write (typed writable), optional buffers)
WRAPPERS = {
    "loss_and_grads": (("params", "grads", "inputs", "targets", "h", "work", "hidden_size",
                        "vocab_size", "dh0"), {"grads", "h", "work", "dh0"}, {"dh0"}),
    "forward_loss": (("params", "inputs", "targets", "h", "work", "hidden_size", "vocab_size"),
                     {"h", "work"}, {"targets"}),
    "train_step": (("params", "grads", "mem", "inputs", "targets", "h", "work", "hidden_size",
                    "vocab_size", "optimizer", "lr", "eps", "clip", "mem2", "beta1", "beta2",
                    "step", "clip_norm", "grad_scale"),
                   {"params", "grads", "mem", "mem2", "h", "work"}, {"mem", "mem2"}),
    "optimizer_update": (("params", "grads", "state1", "state2", "optimizer", "lr", "eps",
                          "clip", "beta1", "beta2", "step", "clip_norm", "grad_scale"),
                         {"params", "state1", "state2"}, {"state1", "state2"}),
    "adagrad_update": (("params", "grads", "mem", "lr", "eps", "clip"), {"params", "mem"}, set()),
    "sample": (("params", "h", "uniforms", "temperature", "greedy", "out", "work", "hidden_size",
                "vocab_size", "top_k", "top_p"), {"h", "out", "work"}, set()),
}
SCALARS = {"hidden_size", "vocab_size", "optimizer", "lr", "eps", "clip", "temperature", "greedy",
           "beta1", "beta2", "step", "clip_norm", "grad_scale", "top_k", "top_p"}
STATES = {"mem", "mem2", "state1", "state2"}
# buffers whose length may exceed the minimum (work always; uniforms beyond len(out))
AT_LEAST = {"work", "uniforms"}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
OTHER_DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8,
                np.complex128, np.bool_, object]
# ways to spoil a buffer argument (see `layout`); "alias" makes it overlap another buffer
DAMAGE = ("dtype", "short", "long", "ndim_up", "ndim_down", "strided", "reversed", "fortran",
          "readonly", "unaligned", "none", "alias")
BAD_IDS = (-1, -2**31, 2**31 - 1)  # plus V and V + 1, which depend on the call
DEFAULT_SCALARS = {"optimizer": ADAM, "lr": 0.1, "eps": 1e-8, "clip": 5.0, "temperature": 1.0,
                   "greedy": False, "beta1": 0.9, "beta2": 0.999, "step": 1, "clip_norm": None,
                   "grad_scale": 1.0, "top_k": 0, "top_p": 1.0}


def num_params(H, V):
    return 2 * H * V + H * H + H + V


def block_steps(B, T, H, V):
    """Time steps per BPTT block: the whole chunk unless its B*T*H values pass a quarter of the
    analytic minimum memory of a step (3 copies of the parameters plus B*T*(H+V) activations);
    then as many steps as fit that quarter (at least 1, at most T)."""
    budget = (3 * num_params(H, V) + T * B * (H + V)) // 4
    if T * B * H <= budget:
        return T
    return max(1, min(T, budget // (B * H)))


def transposed_ld(n):
    """Row length of a transposed weight copy: n rounded up to 16, plus 16 at multiples of 128."""
    ld = -(-n // 16) * 16
    return ld + 16 if ld % 128 == 0 else ld


def chunk_parts(B, T, H, V, threads=1):
    """Groups of rows a chunk is split into: at most `threads` (and 64), each at least one row
    and 2**20 multiply-adds (T*H*(H+V) per row). One sequence: slices of the hidden units, none
    below H=512, at most `threads` (and 64), each at least 256 units."""
    if B == 1:
        return 1 if H < 512 else max(1, min(threads, 64, H // 256))
    per_row = T * H * (H + V)
    rows = max(1, (1 << 20) // per_row)
    return max(1, min(threads, 64, B // rows))


def work_size(B, T, H, V, threads=1):
    """WhhT (H, ld(H)) and WhyT (H, ld(V)); then per part of Bp rows: hs (T+1,Bp,H) and 16
    values of slack, Z (T,Bp,V), dH (a block of steps plus a carried (Bp,H)), dXT (V,H), a
    vector of H rounded up to 16; then a gradient buffer for every part but the first. (The kernels take T steps per block where the
    block rule's products would pass 2**62; any such chunk is refused for passing 2**31.)"""
    Hp = -(-H // 16) * 16
    parts = chunk_parts(B, T, H, V, threads)
    slices = 1
    if B == 1:  # slices of one sequence: one part's buffers, two partial-sum vectors per slice
        slices, parts = parts, 1
    total = H * transposed_ld(H) + H * transposed_ld(V) + (parts - 1) * num_params(H, V) + \
        (2 * slices * Hp - Hp if slices > 1 else 0)
    for p in range(parts):
        Bp = B // parts + (1 if p < B % parts else 0)
        steps = block_steps(Bp, T, H, V) if (Bp + H + V) * T * H < 2**62 else T
        total += (T + 1) * Bp * H + 16 + T * Bp * V + (steps + 1) * Bp * H + V * H + Hp
    return total


def sample_work_size(H, V):
    """The three weight matrices transposed, then logits and a state with slack, then V doubles
    on a 64-byte line."""
    Hp, Vp = -(-H // 16) * 16, -(-V // 16) * 16  # rows padded to a multiple of 16
    return V * Hp + H * Hp + H * Vp + SCRATCH_SLACK + Vp + Hp + 2 * Vp + 16


def optimizer_of(name, a):
    return ADAGRAD if name == "adagrad_update" else a.get("optimizer")


def state_used(name, arg, optimizer):
    """Whether optimizer code `optimizer` reads and writes state buffer `arg` of wrapper `name`
    (state 1: all but SGD; state 2: Adam only)."""
    first, second = STATE_ARGS[name]
    if arg == first:
        return optimizer != SGD
    return arg == second and optimizer == ADAM


def buffers(name):
    args, _, _ = WRAPPERS[name]
    return [a for a in args if a not in SCALARS]


def float_buffers(name):
    """The buffers of the model's float dtype (those an "alias" damage can pair up)."""
    return [a for a in buffers(name) if a in ("params", "grads", "h", "dh0", "work") or a in STATES]


def shape_and_dtype(arg, name, dtype, B, T, H, V, n):
    """The shape and dtype a valid `arg` of wrapper `name` has."""
    if arg in ("params", "grads") or arg in STATES:
        return (num_params(H, V),), dtype
    if arg in ("inputs", "targets"):
        return (B, T), ID
    if arg in ("h", "dh0"):
        return ((H,) if name == "sample" else (B, H)), dtype
    if arg == "work":
        return ((sample_work_size(H, V),) if name == "sample" else (work_size(B, T, H, V),)), dtype
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
    elif arg in STATES:  # sums/means of squares (and Adam's first moment): non-negative fits all
        a[...] = np.abs(rng.normal(0, 1, a.shape))
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


def _real(value):
    """What converts to a C double (bools do; None and strings do not)."""
    return isinstance(value, (int, float))


def _c_int(value):
    """A C int argument: an integer (anything with __index__; no float, not even 2.0) that fits."""
    try:
        value = operator.index(value)
    except TypeError:
        return False
    return -2**31 <= value < 2**31


def hyper_ok(value, dtype, allow_inf=False, allow_none=False):
    """Whether lr/eps/clip/clip_norm/grad_scale/temperature `value` must be accepted for float
    buffers of `dtype`: positive, finite (clip, clip_norm: inf and None allowed), and still so
    once rounded to `dtype`."""
    if value is None:
        return allow_none
    if not _real(value):
        return False
    if not (value > 0) or (value == math.inf and not allow_inf):
        return False
    with np.errstate(over="ignore", under="ignore"):
        cast = dtype.type(value)
    return bool(cast > 0) and (allow_inf or bool(np.isfinite(cast)))


def _standard(x):
    """Plain C layout: the strides np.empty would give, aligned."""
    return x.flags.aligned and x.strides == np.empty(x.shape, x.dtype).strides


def _update_settings_ok(name, a, dtype):
    """The optimizer's hyperparameters (defaults where the wrapper has no such argument)."""
    g = {**DEFAULT_SCALARS, **{k: a[k] for k in SCALARS if k in a}}
    if not (hyper_ok(g["lr"], dtype) and hyper_ok(g["eps"], dtype)
            and hyper_ok(g["clip"], dtype, allow_inf=True, allow_none=True)
            and hyper_ok(g["clip_norm"], dtype, allow_inf=True, allow_none=True)
            and hyper_ok(g["grad_scale"], dtype)):
        return False
    b1, b2, step = g["beta1"], g["beta2"], g["step"]
    if not (_real(b1) and _real(b2) and _real(step)):
        return False
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        return False
    return step >= 1 and step != math.inf and step == int(step)


def verdict(name, a):
    """The kernel contract, restated independently of the kernels: "valid" (must work),
    "either" (a layout the buffer protocol may or may not accept as C-contiguous; if it works it
    must be right) or "invalid" (must raise)."""
    args, writable, optional = WRAPPERS[name]
    params = a["params"]
    if params is None or params.dtype not in FLOATS:
        return "invalid"
    dtype, result = params.dtype, "valid"
    opt = optimizer_of(name, a)
    if "optimizer" in args and not _c_int(opt):
        return "invalid"
    for arg in buffers(name):
        x = a[arg]
        if x is None:
            if arg in optional and not (arg in STATES and state_used(name, arg, opt)):
                continue
            return "invalid"
        want = ID if arg in ("inputs", "targets", "out") else U if arg == "uniforms" else dtype
        ndim = 2 if arg in ("inputs", "targets") or (arg in ("h", "dh0") and name != "sample") \
            else 1
        if x.dtype != want or x.ndim != ndim or not x.flags.c_contiguous:
            return "invalid"
        if arg in writable and not x.flags.writeable:
            return "invalid"
        if not _standard(x):
            result = "either"
    # what an optimizer does not use is neither read nor written: no size or overlap rules
    unused = {k for k in buffers(name) if k in STATES and not state_used(name, k, opt)}
    written = writable - unused
    # nothing written may share memory with any other buffer
    present = [k for k in buffers(name) if a[k] is not None and a[k].size and k not in unused]
    for i, k in enumerate(present):
        for j in present[i + 1:]:
            if (k in written or j in written) and np.shares_memory(a[k], a[j]):
                return "invalid"
    for k in ("hidden_size", "vocab_size", "top_k"):  # C ints
        if k in args and not _c_int(a[k]):
            return "invalid"
    if name not in ("adagrad_update", "optimizer_update"):
        H, V = a["hidden_size"], a["vocab_size"]
        if H <= 0 or V <= 0 or params.size != num_params(H, V):
            return "invalid"
    P = params.size
    if "grads" in args and a["grads"].size != P:
        return "invalid"
    if name in ("adagrad_update", "train_step", "optimizer_update"):
        if opt not in OPTIMIZER_NAMES:
            return "invalid"
        for k in STATE_ARGS[name]:
            if k is not None and state_used(name, k, opt) and a[k].size != P:
                return "invalid"
        if not _update_settings_ok(name, a, dtype):
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
        need = work_size(B, T, H, V)
        if a["h"].shape != (B, H) or a["work"].size < need or need >= 2**31:
            return "invalid"
        if a.get("dh0") is not None and a["dh0"].shape != (B, H):
            return "invalid"
    if name == "sample":
        if a["h"].size != H or a["work"].size < sample_work_size(H, V):
            return "invalid"
        if not (_real(a["temperature"]) and _real(a["top_p"])):
            return "invalid"  # C doubles even when unused
        if not (a["top_k"] >= 0 and 0 < a["top_p"] <= 1):
            return "invalid"
        if not a["greedy"]:
            if a["uniforms"].size < a["out"].size:
                return "invalid"
            if not hyper_ok(a["temperature"], dtype, allow_inf=False):
                return "invalid"
    return result


# -- the reference ----------------------------------------------------------------------------

def _numpy_model(P, H, V):
    m = NumpyBackend(vanilla(H, V), np.float64)
    m.flat[...] = P
    return m


def optimizer_reference(optimizer, P, G, S1, S2, settings):
    """The float64 numpy backend's `update` (the reference math) on copies: returns the new
    parameters, the new state buffers (None where unused) and the gradient norm (-1 without
    clip_norm)."""
    g = {**DEFAULT_SCALARS, **settings}
    m = NumpyBackend(vanilla(1, 1), np.float64)
    m.flat = np.array(P, np.float64)
    name = OPTIMIZER_NAMES[optimizer]
    state = {"adagrad": {"mem": S1}, "sgd": {}, "rmsprop": {"mean_square": S1},
             "adam": {"m": S1, "v": S2}}[name]
    state = {k: np.array(v, np.float64) for k, v in state.items()}
    opt = types.SimpleNamespace(name=name, lr=g["lr"], eps=g["eps"], clip=g["clip"],
                                clip_norm=g["clip_norm"], beta1=g["beta1"], beta2=g["beta2"],
                                steps=int(g["step"]) - 1, state=state)
    m.update(opt, np.array(G, np.float64), g["grad_scale"])
    states = list(state.values()) + [None, None]
    norm = -1.0
    if g["clip_norm"] is not None and g["clip_norm"] < math.inf:
        gd = np.asarray(G, np.float64) * g["grad_scale"]
        norm = math.sqrt(float(gd @ gd))
    return m.flat, states[0], states[1], norm


def reference(name, a):
    """What wrapper `name` must compute from the argument values `a` (float64 copies taken
    before the call): a dict of expected outputs, keyed by argument name or "return"."""
    settings = {k: a[k] for k in SCALARS if k in a}
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
        P, M, M2, _ = optimizer_reference(a["optimizer"], a["params"], g, a.get("mem"),
                                          a.get("mem2"), settings)
        out["params"] = P
        for k, v in (("mem", M), ("mem2", M2)):
            if state_used(name, k, a["optimizer"]):
                out[k] = v
        return out
    if name in ("adagrad_update", "optimizer_update"):
        opt = optimizer_of(name, a)
        s1, s2 = STATE_ARGS[name]
        P, M, M2, norm = optimizer_reference(opt, a["params"], a["grads"], a.get(s1),
                                             a.get(s2) if s2 else None, settings)
        out = {"params": P}
        for k, v in ((s1, M), (s2, M2)):
            if k is not None and state_used(name, k, opt):
                out[k] = v
        if name == "optimizer_update":
            out["return"] = norm
        return out
    raise KeyError(name)


def check_sample(a, dtype, out, h_after):
    """`out` are ids the sampler drew from the state a["h"]; check each against the float64
    distribution it was drawn from (argmax, or the inverse-CDF of a["uniforms"] over the masses
    top_k/top_p keep), and the final state against stepping the float64 model over those ids."""
    H, V = a["hidden_size"], a["vocab_size"]
    m = _numpy_model(a["params"], H, V).params
    tol = 1e-9 if dtype == np.float64 else 1e-3
    h = a["h"].copy()
    n_rank = a["top_k"] if 0 < a["top_k"] < V else V
    filtered = n_rank < V or a["top_p"] < 1
    assert out.dtype == ID and np.all((out >= 0) & (out < V)), out
    for k, idx in enumerate(out):
        z = m["Why"] @ h + m["by"]
        slack = tol * (1 + abs(z).max())
        if a["greedy"]:
            assert z[idx] >= z.max() - slack
        else:
            e = np.exp((z - z.max()) / a["temperature"])
            ranked = np.lexsort((np.arange(V), -z))[:n_rank]
            n_keep = n_rank
            if a["top_p"] < 1:
                cum = np.cumsum(e[ranked])
                n_keep = int(np.argmax(cum >= a["top_p"] * cum[-1])) + 1
            kept = ranked[:n_keep]
            if filtered and idx not in kept:
                # only a rounding of the float32 logits may move the boundary of the kept set
                assert dtype != np.float64, (k, idx, kept)
                boundary = z[ranked[n_keep - 1]]
                assert z[idx] >= boundary - slack or (
                    a["top_p"] < 1 and abs(cum[n_keep - 1] - a["top_p"] * cum[-1])
                    <= 1e-3 * cum[-1] + np.exp((z[idx] - z.max()) / a["temperature"])), (k, idx)
            else:
                if filtered:
                    w = np.zeros_like(e)
                    w[kept] = e[kept]
                    e = w
                c = np.cumsum(e) / e.sum()
                u = a["uniforms"][k]
                lo = c[idx - 1] if idx > 0 else 0.0
                ok = lo <= u + tol and (c[idx] >= u - tol or idx == V - 1
                                        or not np.any(e[idx + 1:] > 0))
                # float32: a near-boundary id may be kept or dropped, which moves the CDF a little
                assert ok or (dtype != np.float64 and filtered), (k, idx, u, c)
        h = np.tanh(m["Wxh"][:, idx] + m["Whh"] @ h + m["bh"])
    np.testing.assert_allclose(h_after, h, rtol=tol, atol=tol)


def close(got, want, dtype):
    """Norm-wise relative agreement, scaled for the dtype's rounding (and overflow-safe)."""
    tol = 1e-9 if dtype == np.float64 else 2e-4
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.ndim == 0 and want == np.inf and got == np.inf:
        return  # a gradient norm past the double range (a huge grad_scale), in both
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
    opt = optimizer_of(name, a)
    written = {k for k in WRAPPERS[name][1]
               if k not in STATES or (_c_int(opt) and state_used(name, k, opt))}
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
        if k not in written and not (k in STATES and any(
                a[j] is not None and np.shares_memory(a[k], a[j]) for j in written)):
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
