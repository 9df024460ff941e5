"""One conformance suite for every model on every backend and device: backend x device x cell x
layers, against the numpy backend (float64, the readable reference) and finite differences.

Dropout masks are passed to the backends directly (the Trainer draws them): the same masks must
give the same loss, gradients and states everywhere.
"""
import importlib.util

import numpy as np
import pytest

import fastrnn
from conftest import rel_err

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch")
needs_cuda = pytest.mark.skipif(not (HAS_TORCH and fastrnn.cuda_available()),
                                reason="no usable CUDA device")
TARGETS = [pytest.param("numpy", "cpu", id="numpy-cpu"),
           pytest.param("cython", "cpu", id="cython-cpu"),
           pytest.param("torch", "cpu", id="torch-cpu", marks=needs_torch),
           pytest.param("torch", "cuda", id="torch-cuda", marks=needs_cuda)]
CELLS = {"rnn-tanh": ("rnn", "tanh"), "rnn-relu": ("rnn", "relu"), "lstm": ("lstm", "tanh"),
         "gru": ("gru", "tanh")}
LAYERS = [1, 2, 3]
TOL = {"float64": 1e-10, "float32": 1e-4}

cases = pytest.mark.parametrize("backend,device", TARGETS)
cells = pytest.mark.parametrize("cell", list(CELLS))
layers = pytest.mark.parametrize("L", LAYERS)


def make(backend, device, cell, L, V, H, dtype="float64", seed=0, params=None):
    if backend == "torch":
        import torch_helpers  # noqa: F401  (TF32 off, one thread: numbers, not speed)
    kind, nonlinearity = CELLS[cell]
    m = fastrnn.CharRNN(V, H, cell=kind, num_layers=L, nonlinearity=nonlinearity,
                        dropout=0.25 if L > 1 else 0.0, backend=backend, device=device,
                        dtype=dtype)
    m.set_params(params if params is not None else random_params(m.spec, seed))
    return m


def random_params(spec, seed):
    """Every tensor random (biases too), at the scale of a trained model."""
    rng = np.random.default_rng(seed)
    return {name: (rng.normal(0, 0.3, shape) if len(shape) == 1
                   else rng.normal(0, 1 / np.sqrt(shape[1]) + 0.3 * (shape[1] > 20), shape))
            for name, shape in spec.shapes().items()}


def parts(state):
    """A backend state (a lone array or a tuple of arrays) as a tuple."""
    return (state,) if isinstance(state, np.ndarray) else tuple(state)


def chunk(m, B, T, seed):
    """ids, a random initial backend state and dropout masks (L-1,B,T,H) for a (B,T) chunk."""
    rng = np.random.default_rng(seed)
    V, H, L = m.vocab_size, m.hidden_size, m.num_layers
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    zero = m.zero_state(B)
    h0 = (rng.normal(0, 0.5, zero.shape) if isinstance(zero, np.ndarray)
          else tuple(rng.normal(0, 0.5, a.shape) for a in zero))
    masks = (rng.random((L - 1, B, T, H)) >= 0.25) / 0.75
    return x, y, h0, masks


def backend_state(m, h0, B):
    return m._initial_state(h0, B, False)


@cases
@cells
@layers
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_grads_dstate_and_state_match_numpy(backend, device, cell, L, dtype):
    B, T, H, V = (3, 7, 5, 11) if L != 2 else (2, 9, 17, 6)
    m = make(backend, device, cell, L, V, H, dtype, seed=L)
    ref = make("numpy", "cpu", cell, L, V, H, "float64", params=m.get_params())
    x, y, h0, masks = chunk(m, B, T, seed=7)
    tol = TOL[dtype]

    # the public call (no dropout): user-shaped state and dstate
    loss, grads, h = m.loss_and_grads(x, y, h0, return_dh0=True)
    r_loss, r_grads, r_h = ref.loss_and_grads(x, y, h0, return_dh0=True)
    assert abs(loss - r_loss) <= tol * abs(r_loss)
    assert set(grads) == set(r_grads)
    for k in r_grads:
        for a, b in zip(parts(grads[k]), parts(r_grads[k])):
            assert a.shape == b.shape and rel_err(a, b) <= tol, k
    assert type(h) is type(h0) and type(grads["h0"]) is type(h0)
    for a, b in zip(parts(h), parts(r_h)):
        assert a.shape == b.shape and a.dtype == m.dtype and rel_err(a, b) <= tol
    assert abs(m.loss(x, y, h0)[0] - r_loss) <= tol * abs(r_loss)

    # the backends with dropout masks: loss, flat gradients, dstate and last state
    s, r_s = backend_state(m, h0, B), backend_state(ref, h0, B)
    loss, flat, dstate = m._backend.loss_and_grads(x, y, s, True, masks)
    r_loss, r_flat, r_dstate = ref._backend.loss_and_grads(x, y, r_s, True, masks)
    assert abs(loss - r_loss) <= tol * abs(r_loss)
    got, want = m._backend.to_dict(flat), ref._backend.to_dict(r_flat)
    for k in want:
        assert rel_err(got[k], want[k]) <= tol, k
        assert np.abs(want[k]).max() > 0, k  # every tensor takes part
    for a, b in zip(parts(dstate), parts(r_dstate)):
        assert rel_err(a, b) <= tol and np.abs(b).max() > 0
    for a, b in zip(parts(s), parts(r_s)):
        assert rel_err(a, b) <= tol
    if L > 1:  # the masks do change the result
        s2 = backend_state(ref, h0, B)
        assert rel_err(ref._backend.loss_and_grads(x, y, s2)[1], r_flat) > 1e-2


def numeric_grad(f, x, idx, eps=1e-6):
    """Central differences of f() wrt the entries idx of array x (perturbed in place)."""
    out = []
    for i in idx:
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        out.append((fp - fm) / (2 * eps))
    return np.array(out)


def sample_entries(shape, rng, n=8):
    """Up to n multi-indices of an array of `shape` (all of them when it is that small)."""
    size = int(np.prod(shape))
    flat = np.arange(size) if size <= n else rng.choice(size, n, replace=False)
    return [np.unravel_index(i, shape) for i in flat]


@cases
@cells
@layers
def test_gradients_match_finite_differences(backend, device, cell, L):
    """float64, tiny model, dropout masks fixed: every tensor and the initial state."""
    B, T, H, V = 2, 4, 3, 4
    m = make(backend, device, cell, L, V, H, seed=10 + L)
    params = m.get_params()
    x, y, h0, masks = chunk(m, B, T, seed=3)
    h0 = parts(h0)
    _, flat, dstate = m._backend.loss_and_grads(x, y, backend_state(m, h0 if len(h0) > 1 else
                                                                   h0[0], B), True, masks)
    grads = m._backend.to_dict(flat)

    def f():
        m.set_params(params)
        s = backend_state(m, h0 if len(h0) > 1 else h0[0], B)
        return m._backend.loss_and_grads(x, y, s, False, masks)[0]

    rng = np.random.default_rng(0)
    for name, value in params.items():
        idx = sample_entries(value.shape, rng)
        num = numeric_grad(f, value, idx)
        ana = np.array([grads[name][i] for i in idx])
        assert rel_err(ana, num) <= 1e-6, name
        assert np.abs(ana).max() > 0 or np.abs(grads[name]).max() > 0, name
    for part, d in zip(h0, parts(dstate)):
        idx = sample_entries(part.shape, rng, n=12)
        num = numeric_grad(f, part, idx)
        assert rel_err(np.array([d[i] for i in idx]), num) <= 1e-6
        assert np.abs(d).max() > 0


OPTIMIZERS = [("adam", dict(lr=0.01, clip_norm=0.5)), ("rmsprop", dict(lr=0.01, clip=0.1)),
              ("adagrad", dict(lr=0.05, clip=5.0))]


@cases
@cells
@layers
@pytest.mark.parametrize("opt_name,hyper", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_train_step_is_loss_and_grads_then_the_optimizer(backend, device, cell, L, opt_name,
                                                         hyper):
    B, T, H, V = 3, 5, 6, 7
    a = make(backend, device, cell, L, V, H, seed=4)
    b = make(backend, device, cell, L, V, H, params=a.get_params())
    c = make(backend, device, cell, L, V, H, params=a.get_params())
    opts = [fastrnn.make_optimizer(opt_name, m, **hyper) for m in (a, b, c)]
    x, y, h0, masks = chunk(a, B, T, seed=5)
    sa, sb, sc = (backend_state(m, h0, B) for m in (a, b, c))
    for _ in range(2):
        la = a._backend.train_step(x, y, sa, opts[0], 0.5, masks)
        lb, flat, _ = b._backend.loss_and_grads(x, y, sb, masks=masks)
        opts[1].step(b._backend.to_dict(flat), grad_scale=0.5)
        lc, taken = c._backend.train_step_guarded(x, y, sc, opts[2], 0.5, masks)
        assert taken and la == pytest.approx(lb, rel=1e-12) and lc == la
    want = b.get_params()
    for m in (a, c):
        for k, v in m.get_params().items():
            assert rel_err(v, want[k]) <= 1e-12, k
    assert rel_err(want["Why"], make("numpy", "cpu", cell, L, V, H, seed=4).get_params()["Why"]) \
        > 1e-4  # the steps moved the parameters
    for s in (sa, sc):
        for p, q in zip(parts(s), parts(sb)):
            assert rel_err(p, q) <= 1e-12
    assert opts[0].steps == opts[1].steps == opts[2].steps == 2


SAMPLING = [dict(), dict(temperature=0.7, top_k=3), dict(top_p=0.8), dict(greedy=True)]


@cases
@cells
@layers
def test_generate_gives_the_numpy_ids(backend, device, cell, L):
    V, H = 9, 6
    m = make(backend, device, cell, L, V, H, seed=20 + L)
    ref = make("numpy", "cpu", cell, L, V, H, params=m.get_params())
    _, _, h0, _ = chunk(m, 1, 1, seed=2)
    h0 = tuple(a[:, 0] for a in h0) if isinstance(h0, tuple) else h0[..., 0, :]  # one sequence
    for kw in SAMPLING:
        for prime, start in ((None, None), ([1, 4, 2], h0)):
            got = m.generate(60, seed=11, prime_ids=prime, h0=start, **kw)
            want = ref.generate(60, seed=11, prime_ids=prime, h0=start, **kw)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, want, err_msg=str(kw))
    assert len(set(ref.generate(60, seed=11).tolist())) > 2  # not a constant stream
    s = "".join(map(str, m.stream(25, seed=3, chunk_size=7)))
    assert s == "".join(map(str, ref.generate(25, seed=3).tolist()))


# -- bad input: one clear error ----------------------------------------------------------------

BAD_MODELS = [
    (dict(cell="foo"), ValueError, "cell must be one of"),
    (dict(cell="LSTM"), ValueError, "cell must be one of"),
    (dict(num_layers=0), ValueError, "num_layers must be a positive integer"),
    (dict(num_layers=2.0), ValueError, "num_layers must be a positive integer"),
    (dict(num_layers=2, dropout=1), ValueError, r"dropout must be a number in \[0, 1\)"),
    (dict(num_layers=2, dropout=float("nan")), ValueError, "dropout must be a number"),
    (dict(num_layers=2, dropout=-0.1), ValueError, "dropout must be a number"),
    (dict(num_layers=2, dropout="0.5"), ValueError, "dropout must be a number"),
    (dict(cell="lstm", nonlinearity="relu"), ValueError, "for cell='rnn' only"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity must be 'tanh' or 'relu'"),
    (dict(cell="lstm", init="identity"), ValueError, "init='identity' is for cell='rnn'"),
    (dict(cell="gru", init="identity"), ValueError, "init='identity' is for cell='rnn'"),
    (dict(init="xavier"), ValueError, "init must be one of"),
    (dict(cell="gru", forget_bias=1.0), ValueError, "forget_bias is for cell='lstm'"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_MODELS)
@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_bad_model_arguments_get_one_clear_error(backend, kwargs, exc, match):
    with pytest.raises(exc, match=match) as info:
        fastrnn.CharRNN(5, 4, backend=backend, **kwargs)
    assert "\n" not in str(info.value)


def bad_states(cell, L, B, H):
    """(state, exception, message) that a model of `cell` with L layers must refuse."""
    want = (L, B, H)
    good = np.zeros(want)
    out = [(np.zeros((L, B, H + 1)), ValueError, "shape"),
           (np.zeros((L + 1, B, H)), ValueError, "shape"),
           (np.zeros((B, H)), ValueError, "shape"),
           (np.full(want, np.nan), ValueError, "NaN or infinite"),
           (np.full(want, -np.inf), ValueError, "NaN or infinite"),
           (np.full(want, "a"), TypeError, "real numbers")]
    if cell == "lstm":
        out = [((a, good), e, m) for a, e, m in out] + [((good, a), e, m) for a, e, m in out]
        out += [(good, TypeError, r"tuple \(h, c\)"), ((good,), TypeError, r"tuple \(h, c\)"),
                ((good, good, good), TypeError, r"tuple \(h, c\)"),
                ([good, good], TypeError, r"tuple \(h, c\)")]
    else:
        out += [((good,), TypeError, "not a tuple"), ((good, good), TypeError, "not a tuple")]
    return out


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("cell,L", [("rnn-relu", 1), ("rnn-tanh", 2), ("lstm", 1), ("lstm", 2),
                                    ("gru", 3)])
def test_bad_states_get_one_clear_error(backend, cell, L):
    B, T, H, V = 2, 3, 4, 5
    m = make(backend, "cpu", cell, L, V, H)
    x = np.zeros((B, T), dtype=np.int32)
    calls = [lambda h: m.loss_and_grads(x, x, h), lambda h: m.loss(x, x, h)]
    for h, exc, match in bad_states(CELLS[cell][0], L, B, H):
        for call in calls:
            with pytest.raises(exc, match=match) as info:
                call(h)
            assert "\n" not in str(info.value)
    one = np.zeros((L, H))  # generation: one sequence, (L,H) parts
    for h, exc, match in [(np.zeros((L, H + 1)), ValueError, "shape"),
                          (np.zeros((1, L, H)), ValueError, "shape"),
                          ((one,) * (2 if cell != "lstm" else 3), TypeError, "tuple")]:
        with pytest.raises(exc, match=match):
            m.generate(3, h0=h if cell != "lstm" or isinstance(h, tuple) else (h, one))


@needs_torch
def test_torch_refuses_dropout_masks_of_the_wrong_shape():
    m = make("torch", "cpu", "lstm", 2, 5, 4)
    x, y, h0, masks = chunk(m, 2, 3, seed=0)
    for bad in (masks[:, :1], masks[..., :3], masks[None]):
        with pytest.raises(ValueError, match=r"masks have shape .*; expected \(1, 2, 3, 4\)"):
            m._backend.loss_and_grads(x, y, backend_state(m, h0, 2), masks=bad)


@cases
@pytest.mark.parametrize("cell,L", [("lstm", 2), ("gru", 1), ("rnn-relu", 3)])
def test_a_guarded_step_that_overflows_changes_nothing(backend, device, cell, L):
    m = make(backend, device, cell, L, 5, 4, dtype="float32")
    opt = fastrnn.SGD(m, lr=3.4e38, clip=None)  # the first step's parameters overflow after it
    x, y, h0, masks = chunk(m, 2, 4, seed=1)
    s = backend_state(m, h0, 2)
    refused = 0
    for _ in range(3):
        params, state, steps = m.get_params(), [a.copy() for a in parts(s)], opt.steps
        with np.errstate(all="ignore"):
            loss, taken = m._backend.train_step_guarded(x, y, s, opt, 1.0, masks)
        if not taken:
            refused += 1
            assert opt.steps == steps
            for k, v in m.get_params().items():
                np.testing.assert_array_equal(v, params[k])
            for a, b in zip(parts(s), state):
                np.testing.assert_array_equal(a, b)
        assert all(np.isfinite(v).all() for v in m.get_params().values())
    assert refused >= 2
