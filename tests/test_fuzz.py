"""Property-based tests (hypothesis) of everything that takes arrays or text from users: the
compiled kernels' Python wrappers, Vocab, and the CharRNN API.

Random shapes, dtypes, strides, read-only flags, aliasing, id ranges and hyperparameters either
work and agree with the numpy reference, or raise a Python exception; a crash (segfault, abort,
sanitizer report) fails the run. Example counts are modest: the file runs in a few seconds.
"""
import math
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
import kernelspec as S
from conftest import random_params, rel_err

# FASTRNN_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py for a deeper search than CI's
EXAMPLES = int(os.environ.get("FASTRNN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

ODD_NUMBERS = [0, 0.0, -1.0, math.nan, math.inf, -math.inf, 1e-50, 1e-40, 1e300, 5e38, None,
               "1", True]
hyper = st.one_of(st.floats(1e-3, 10.0), st.sampled_from(ODD_NUMBERS),
                  st.floats(allow_nan=True, allow_infinity=True))


# -- the kernel wrappers ----------------------------------------------------------------------

@st.composite
def kernel_calls(draw):
    name = draw(st.sampled_from(sorted(S.WRAPPERS)))
    dtype = draw(st.sampled_from(S.FLOATS))
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    H, V = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    n = draw(st.integers(0, 6))
    damage = []
    for arg in draw(st.lists(st.sampled_from(S.buffers(name)), max_size=2, unique=True)):
        kind = draw(st.sampled_from(S.DAMAGE))
        other = None
        if kind == "dtype":
            other = draw(st.sampled_from(S.OTHER_DTYPES))
        elif kind == "alias":
            partners = [p for p in S.float_buffers(name) if p != arg]
            if arg not in S.float_buffers(name) or not partners:
                continue
            other = draw(st.sampled_from(partners))
        damage.append((arg, kind, other))
    bad_ids = []
    if name in ("loss_and_grads", "forward_loss", "train_step") and draw(st.booleans()):
        bad_ids.append((draw(st.sampled_from(["inputs", "targets"])), draw(st.integers(0, 99)),
                        draw(st.sampled_from(S.BAD_IDS + (V, V + 1, V + 1000)))))
    scalars = {}
    args = S.WRAPPERS[name][0]
    for key in ("lr", "eps", "clip", "clip_norm", "grad_scale", "temperature"):
        if key in args and draw(st.integers(0, 3)) == 0:
            scalars[key] = draw(hyper)
    if "optimizer" in args:
        scalars["optimizer"] = draw(st.sampled_from(sorted(S.OPTIMIZER_NAMES)) if
                                    draw(st.integers(0, 9)) else st.sampled_from([-1, 4, 2**31, 1.0]))
        if "clip_norm" not in scalars and draw(st.booleans()):
            scalars["clip_norm"] = draw(st.floats(1e-3, 10.0))
        for key in ("beta1", "beta2"):
            if draw(st.integers(0, 3)) == 0:
                scalars[key] = draw(st.one_of(st.floats(0, 1), st.sampled_from(ODD_NUMBERS)))
        if draw(st.integers(0, 3)) == 0:
            scalars["step"] = draw(st.one_of(st.integers(-2, 10**6), st.floats(0, 100),
                                             st.sampled_from(ODD_NUMBERS)))
    if name == "sample" and draw(st.booleans()):
        scalars["top_k"] = draw(st.one_of(st.integers(0, 8), st.sampled_from([-1, 2**31, 1.0])))
        scalars["top_p"] = draw(st.one_of(st.floats(0, 1), st.sampled_from(ODD_NUMBERS)))
    if name == "sample":
        scalars["greedy"] = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        key = draw(st.sampled_from(["hidden_size", "vocab_size"]))
        scalars[key] = draw(st.sampled_from([0, -1, H + 1, V + 1, 2**31, float(H)]))
    a = S.make_call(name, dtype, B, T, H, V, n, seed=draw(st.integers(0, 2**32 - 1)),
                    damage=damage, bad_ids=bad_ids, scalars=scalars,
                    with_targets=draw(st.booleans()) if name == "forward_loss" else True,
                    with_dh0=draw(st.booleans()))
    return name, a


@FUZZ
@given(kernel_calls())
def test_kernel_wrappers_work_and_match_or_refuse(call):
    name, a = call
    S.run_and_check(name, a)


@settings(max_examples=max(1, EXAMPLES // 4), deadline=None)
@given(st.sampled_from(S.FLOATS), st.integers(1, 6), st.integers(1, 6), st.integers(1, 8),
       st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf, 1e30]),
       st.integers(0, 2**32 - 1))
def test_sampling_from_broken_parameters_stays_in_range(dtype, H, V, n, greedy, bad, seed):
    """Diverged parameters (NaN/inf) must not make the sampler emit an id outside [0, V): the
    id indexes Wxh on the next step. Logits holding a NaN stop it with FloatingPointError,
    naming the id (issue 17); the ids drawn before that one are in range too."""
    a = S.make_call("sample", dtype, 1, 1, H, V, n, seed=seed, scalars={"greedy": greedy})
    rng = np.random.default_rng(seed)
    P = a["params"]
    P[rng.integers(0, P.size, max(1, P.size // 3))] = bad
    drawn = n
    try:
        S.call("sample", a)
    except FloatingPointError as exc:
        drawn = int(re.search(r"logits hold NaN at generated id (\d+)", str(exc)).group(1))
        assert 0 <= drawn < n
    out = a["out"][:drawn]
    assert np.all((out >= 0) & (out < V)), out


# -- Vocab ------------------------------------------------------------------------------------

# any Python str, lone surrogates (what surrogateescape makes of undecodable bytes) included
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()),
                   max_size=40)


@FUZZ
@given(any_text, any_text)
def test_vocab_round_trips_any_text(text, other):
    if not text:
        with pytest.raises(ValueError):
            fastrnn.Vocab.from_text(text)
        return
    v = fastrnn.Vocab.from_text(text)
    assert v.chars == "".join(sorted(set(text))) and len(v) == len(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert [v.chars[i] for i in ids] == list(text)
    assert v.decode(ids) == text
    assert fastrnn.Vocab(v.chars) == v
    missing = set(other) - set(text)
    if missing:
        with pytest.raises(ValueError, match="not in the vocabulary"):
            v.encode(other)
    else:
        assert v.decode(v.encode(other)) == other


id_arrays = st.one_of(
    st.lists(st.integers(-2**70, 2**70), max_size=12),
    st.tuples(st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64, np.float64,
                               np.bool_, object]),
              st.lists(st.integers(-3, 12), max_size=12), st.integers(1, 2))
    .map(lambda t: np.array(t[1], dtype=np.int64).astype(t[0])[::t[2]]),
    st.lists(st.lists(st.integers(0, 5), min_size=2, max_size=2), max_size=3).map(np.array),
)


@FUZZ
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=12), id_arrays)
def test_vocab_decode_takes_ids_in_range_and_refuses_the_rest(text, ids):
    v = fastrnn.Vocab.from_text(text)
    huge = isinstance(ids, list) and any(abs(i) >= 2**63 for i in ids)
    arr = np.asarray(ids, dtype=object if huge else None)
    ok = arr.size == 0 or (arr.ndim == 1 and arr.dtype.kind in "iu"
                           and 0 <= arr.min() and arr.max() < len(v))
    try:
        out = v.decode(ids)
    except (ValueError, TypeError):
        assert not ok
        return
    assert ok
    assert out == "".join(v.chars[int(i)] for i in arr.reshape(-1))


@FUZZ
@given(st.lists(st.characters(), max_size=8))
def test_vocab_constructor_takes_sorted_distinct_characters(chars):
    s = "".join(chars)
    if s and list(s) == sorted(set(s)):
        assert fastrnn.Vocab(s).chars == s
    else:
        with pytest.raises(ValueError):
            fastrnn.Vocab(s)


# -- the CharRNN API: both CPU backends, same answer or same refusal ------------------------

@st.composite
def user_arrays(draw, V, rank_choices=(1, 2)):
    """Something a user might pass as ids: lists, arrays of any integer (or wrong) dtype, odd
    layouts and flags, values a little outside [0, V)."""
    rank = draw(st.sampled_from(rank_choices))
    shape = tuple(draw(st.integers(0 if draw(st.integers(0, 9)) == 0 else 1, 4))
                  for _ in range(rank))
    lo, hi = (-1, V) if draw(st.integers(0, 4)) == 0 else (0, V - 1)
    values = np.array(draw(st.lists(st.integers(lo, hi), min_size=int(np.prod(shape)),
                                    max_size=int(np.prod(shape)))), dtype=np.int64)
    values = values.reshape(shape)
    dtype = draw(st.sampled_from([np.int64, np.int32, np.int8, np.uint8, np.uint16, np.int16,
                                  np.float64, np.bool_, "list"]))
    if dtype == "list":
        return values.tolist()
    if np.dtype(dtype).kind == "u" and values.size and values.min() < 0:
        dtype = np.int64
    a = values.astype(dtype)
    layout = draw(st.sampled_from(["c", "f", "strided", "reversed", "readonly"]))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "reversed" and a.ndim:
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif layout == "readonly":
        a.flags.writeable = False
    return a


@st.composite
def states(draw, B, H, squeeze):
    kind = draw(st.sampled_from(["none", "ok", "ok", "shape", "dtype", "value"]))
    if kind == "none":
        return None
    shape = (H,) if squeeze else (B, H)
    if kind == "shape":
        shape = draw(st.sampled_from([(H + 1,), (B, H + 1), (B + 1, H), (1, B, H), ()]))
    h = np.random.default_rng(draw(st.integers(0, 99))).uniform(-1, 1, shape)
    if kind == "dtype":
        h = h.astype(draw(st.sampled_from([np.float16, np.int64, np.complex128, np.bool_,
                                           object])))
    if kind == "value" and h.size:
        h.reshape(-1)[0] = draw(st.sampled_from([math.nan, math.inf, 1e300, -1e39]))
    return h


def outcome(fn):
    try:
        return "ok", fn()
    except (ValueError, TypeError) as exc:
        return type(exc), exc


def pair_of_models(V, H, dtype, seed):
    rng = np.random.default_rng(seed)
    params = random_params(H, V, rng)
    models = [fastrnn.CharRNN(V, H, backend=b, dtype=dtype) for b in ("numpy", "cython")]
    for m in models:
        m.set_params(params)
    return models


def _largest(r):
    """The largest magnitude of any value in the arrays of a (nested) result (gradients and
    states; not the loss, a sum over tokens)."""
    if isinstance(r, dict):
        return max((_largest(v) for v in r.values()), default=0.0)
    if isinstance(r, tuple):
        return max((_largest(v) for v in r), default=0.0)
    return float(np.max(np.abs(r), initial=0.0)) if np.ndim(r) > 0 else 0.0


def agree(r1, r2, dtype, scale=None):
    """Each array of r2 within 2e-4 (float32; 1e-9 float64) of r1's, norm-wise; in float32 also
    accepted: within 1e-6 of the largest value of the result's arrays, which is about how far
    float32 sums of terms of that size round. A gradient that cancels is far smaller than its
    terms, and two summation orders can then differ by more than 2e-4 of it: dWhh of H=1 came to
    -3.4e-5 from terms near 1, numpy's float32 -3.40343e-5, the kernels' -3.40045e-5, float64's
    -3.40764e-5 (each float32 order 1-2e-3 from it)."""
    tol = 1e-9 if dtype == "float64" else 2e-4
    if scale is None:
        scale = _largest(r1)
    if isinstance(r1, dict):
        assert r1.keys() == r2.keys()
        for k in r1:
            agree(r1[k], r2[k], dtype, scale)
    elif isinstance(r1, tuple):
        for x, y in zip(r1, r2, strict=True):
            agree(x, y, dtype, scale)
    else:
        assert np.shape(r1) == np.shape(r2)
        assert rel_err(r1, r2) <= tol or (
            dtype == "float32" and np.max(np.abs(np.asarray(r1, np.float64) - r2),
                                          initial=0.0) <= 1e-6 * scale), (r1, r2)


@FUZZ
@given(st.data())
def test_api_loss_and_grads_same_on_both_backends_or_same_refusal(data):
    V, H = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    ref, fast = pair_of_models(V, H, dtype, data.draw(st.integers(0, 99)))
    x = data.draw(user_arrays(V, (1, 2, 3)))
    if data.draw(st.integers(0, 5)):  # mostly targets of the same shape
        y = np.asarray(x)[..., ::-1] if np.ndim(x) else x
    else:
        y = data.draw(user_arrays(V, (1, 2)))
    squeeze = np.ndim(x) == 1
    h0 = data.draw(states(np.shape(x)[0] if np.ndim(x) else 1, H, squeeze))
    method = data.draw(st.sampled_from(["loss_and_grads", "loss", "loss_and_grads_dh0"]))
    params_before = fast.get_params()

    def run(m):
        if method == "loss":
            return m.loss(x, y, h0)
        return m.loss_and_grads(x, y, h0, return_dh0=method.endswith("dh0"))

    k1, r1 = outcome(lambda: run(ref))
    k2, r2 = outcome(lambda: run(fast))
    assert k1 == k2, (r1, r2)
    if k1 == "ok":
        agree(r1, r2, dtype)
        assert np.isfinite(r1[0])
    for k, v in fast.get_params().items():  # the call never changes the model
        np.testing.assert_array_equal(v, params_before[k])


@FUZZ
@given(st.data())
def test_api_generate_same_on_both_backends_or_same_refusal(data):
    V, H = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    ref, fast = pair_of_models(V, H, "float64", data.draw(st.integers(0, 99)))
    n = data.draw(st.one_of(st.integers(0, 12), st.sampled_from([-1, 2.0, True, None, "3"])))
    prime = data.draw(st.one_of(st.none(), user_arrays(V, (1, 2))))
    h0 = data.draw(states(1, H, True))
    temperature = data.draw(st.one_of(st.floats(0.05, 5.0), st.sampled_from(ODD_NUMBERS)))
    greedy = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2**32 - 1))
    run = lambda m: m.generate(n, prime_ids=prime, h0=h0, temperature=temperature,  # noqa: E731
                               greedy=greedy, seed=seed)
    k1, r1 = outcome(lambda: run(ref))
    k2, r2 = outcome(lambda: run(fast))
    assert k1 == k2, (r1, r2)
    if k1 == "ok":
        np.testing.assert_array_equal(r1, r2)
        assert r1.dtype == np.int32 and r1.shape == (n,) and np.all((r1 >= 0) & (r1 < V))


@FUZZ
@given(st.data())
def test_api_hyperparameters_refused_or_trained_alike(data):
    """hidden size, lr, eps, clip (zero, negative, NaN, inf, tiny, huge, wrong type) either are
    refused when given, or both backends train one step to the same parameters."""
    V = data.draw(st.integers(1, 5))
    H = data.draw(st.one_of(st.integers(1, 5), st.sampled_from([0, -3, 2.0, math.nan, math.inf,
                                                                True, None, "4"])))
    dtype = data.draw(st.sampled_from(["float32", "float64"]))
    kw = {k: data.draw(hyper) for k in ("lr", "eps", "clip") if data.draw(st.booleans())}
    try:
        models = [fastrnn.CharRNN(V, H, backend=b, dtype=dtype) for b in ("numpy", "cython")]
    except (ValueError, TypeError):
        assert not (isinstance(H, int) and not isinstance(H, bool) and H > 0)
        return
    assert isinstance(H, int) and H > 0
    try:
        opts = [fastrnn.Adagrad(m, **kw) for m in models]
    except (ValueError, TypeError):
        assert not all(S.hyper_ok(v, np.dtype("float64"), allow_inf=k == "clip",
                                  allow_none=k == "clip") and not isinstance(v, bool)
                       for k, v in kw.items())
        return
    ids = np.arange(12) % V
    outcomes = [outcome(lambda m=m, o=o: fastrnn.Trainer(m, ids, seq_length=3,
                                                         optimizer=o).step())
                for m, o in zip(models, opts)]
    assert outcomes[0][0] == outcomes[1][0], outcomes
    if outcomes[0][0] == "ok":
        # An Adagrad step moves an element by lr * g / sqrt(g*g + eps): up to 1/sqrt(eps) times
        # the gradient's own rounding error, so compare against lr, not the parameter's size;
        # and lr * g may be subnormal (lr=1e-38), a grain of which sqrt(eps) magnifies.
        lr, eps = opts[0].lr, opts[0].eps
        grain = float(np.finfo(dtype).smallest_subnormal) / math.sqrt(eps)
        tol = (1e-9 if dtype == "float64" else 1e-3) * lr + 4 * grain
        p1, p2 = models[0].get_params(), models[1].get_params()
        for k in p1:
            assert np.all(np.isfinite(p1[k]))
            scale = np.abs(p1[k]).max(initial=0)
            assert np.abs(p1[k].astype(float) - p2[k]).max(initial=0) <= tol + 1e-6 * scale, k
    else:  # refused at the first step: only because a value does not fit the model's dtype
        assert not all(S.hyper_ok(v, np.dtype(dtype), allow_inf=k == "clip",
                                  allow_none=k == "clip") for k, v in kw.items())
