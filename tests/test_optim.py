"""Every optimizer against its formula written out here, and the compiled kernels against the
numpy reference over whole training runs."""
import math

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels as K
from conftest import CPU_BACKENDS, random_params, rel_err

TOL = {"float64": 1e-10, "float32": 1e-4}


def expected_updates(name, params, grads_seq, *, lr, clip=None, clip_norm=None, grad_scale=1.0,
                     eps=1e-8, b1=0.9, b2=0.999, decay=0.95):
    """The parameters after applying each gradient dict of grads_seq, computed tensor by tensor
    in float64 from the textbook formulas."""
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    s1 = {k: np.zeros_like(v) for k, v in p.items()}
    s2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, grads in enumerate(grads_seq, start=1):
        g = {k: v * grad_scale for k, v in grads.items()}
        if clip_norm is not None:
            norm = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
            factor = min(1.0, clip_norm / (norm + 1e-6))
            g = {k: v * factor for k, v in g.items()}
        if clip is not None:
            g = {k: np.minimum(np.maximum(v, -clip), clip) for k, v in g.items()}
        for k in p:
            if name == "sgd":
                p[k] = p[k] - lr * g[k]
            elif name == "adagrad":
                s1[k] = s1[k] + g[k] ** 2
                p[k] = p[k] - lr * g[k] / np.sqrt(s1[k] + eps)
            elif name == "rmsprop":
                s1[k] = decay * s1[k] + (1 - decay) * g[k] ** 2
                p[k] = p[k] - lr * g[k] / (np.sqrt(s1[k]) + eps)
            elif name == "adam":
                s1[k] = b1 * s1[k] + (1 - b1) * g[k]
                s2[k] = b2 * s2[k] + (1 - b2) * g[k] ** 2
                m_hat, v_hat = s1[k] / (1 - b1 ** t), s2[k] / (1 - b2 ** t)
                p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def make_opt(name, model, **kw):
    if name == "sgd":
        kw.pop("eps", None)
    return fastrnn.make_optimizer(name, model, **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("clip,clip_norm,grad_scale", [(None, None, 1.0), (0.5, None, 1.0),
                                                       (None, 2.0, 1.0), (1.0, 3.0, 0.25)])
def test_step_matches_formula(backend, dtype, name, clip, clip_norm, grad_scale):
    rng = np.random.default_rng(7)
    H, V = 6, 5
    params = random_params(H, V, rng)
    grads_seq = [{k: rng.normal(0, 2, v.shape) for k, v in params.items()} for _ in range(4)]
    model = fastrnn.CharRNN(V, H, backend=backend, dtype=dtype)
    model.set_params(params)
    opt = make_opt(name, model, lr=0.03, clip=clip, clip_norm=clip_norm)
    for g in grads_seq:
        opt.step(g, grad_scale=grad_scale)
    assert opt.steps == 4
    want = expected_updates(name, params, grads_seq, lr=0.03, clip=clip, clip_norm=clip_norm,
                            grad_scale=grad_scale)
    got = model.get_params()
    for k in want:
        assert rel_err(got[k], want[k]) <= TOL[dtype], k
        assert not np.allclose(got[k], params[k])  # it moved


def test_clip_norm_bounds_the_applied_gradient():
    """With SGD the applied gradient is (p_before - p_after) / lr: its norm is clip_norm when
    the raw norm is larger, and it is untouched when the raw norm is smaller."""
    rng = np.random.default_rng(3)
    H, V = 7, 4
    for backend in CPU_BACKENDS:
        m = fastrnn.CharRNN(V, H, backend=backend, dtype="float64")
        before = m.get_params()
        g = {k: rng.normal(0, 1, v.shape) for k, v in before.items()}
        raw = math.sqrt(sum(float(np.sum(v * v)) for v in g.values()))
        for bound in (raw / 10, raw * 10):
            p0 = m.get_params()
            fastrnn.SGD(m, lr=1.0, clip=None, clip_norm=bound).step(g)
            applied = {k: p0[k] - v for k, v in m.get_params().items()}
            norm = math.sqrt(sum(float(np.sum(v * v)) for v in applied.values()))
            want = raw * bound / (raw + 1e-6) if bound < raw else raw  # torch's 1e-6 guard
            assert norm == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adam"])
def test_fused_train_step_is_grads_then_update(name):
    """The compiled one-call iteration equals loss_and_grads followed by the formula."""
    rng = np.random.default_rng(11)
    H, V, B, T = 10, 9, 3, 7
    params = random_params(H, V, rng)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    m = fastrnn.CharRNN(V, H, backend="cython", dtype="float64")
    m.set_params(params)
    loss_ref, grads, h_ref = m.loss_and_grads(x, y)
    opt = make_opt(name, m, lr=0.01, clip=0.3, clip_norm=4.0)
    h = np.zeros((B, H))
    loss = m._backend.train_step(x.astype(np.int32), y.astype(np.int32), h, opt, 1.0 / (B * T))
    assert loss == pytest.approx(loss_ref, rel=1e-12) and opt.steps == 1
    assert rel_err(h, h_ref) <= 1e-12
    want = expected_updates(name, params, [grads], lr=0.01, clip=0.3, clip_norm=4.0,
                            grad_scale=1.0 / (B * T))
    for k, v in m.get_params().items():
        assert rel_err(v, want[k]) <= 1e-10, k


@pytest.mark.parametrize("name,lr", [("sgd", 0.001), ("adagrad", 0.01), ("rmsprop", 2e-4),
                                     ("adam", 2e-4)])
@pytest.mark.parametrize("B", [1, 8])
def test_training_trajectory_cython_matches_numpy(shakespeare, name, lr, B):
    """80 fused training iterations per backend, from one init, at a small learning rate (see
    test_parity.py on why Adaptive steps amplify rounding at the gist's lr)."""
    text = shakespeare[:20000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    results = []
    for backend in CPU_BACKENDS:
        m = fastrnn.CharRNN(vocab, 24, backend=backend, dtype="float64", seed=2)
        opt = make_opt(name, m, lr=lr, clip=5.0, clip_norm=50.0)
        r = fastrnn.Trainer(m, ids, seq_length=12, batch_size=B, optimizer=opt,
                            reduction="sum" if B == 1 else "mean").fit(80)
        results.append((m.get_params(), r.losses))
    (p1, l1), (p2, l2) = results
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-10, k
    np.testing.assert_allclose(l1, l2, rtol=1e-10)
    assert l1[-10:].mean() < l1[:10].mean()


def test_state_dict_round_trip_and_checks():
    m = fastrnn.CharRNN(5, 4, backend="cython", dtype="float64")
    opt = fastrnn.Adam(m)
    g = {k: np.ones_like(v) for k, v in m.get_params().items()}
    opt.step(g)
    state = opt.state_dict()
    assert state["steps"] == 1 and set(state) == {"m", "v", "steps"}
    other = fastrnn.Adam(m)
    other.load_state_dict(state)
    assert other.steps == 1 and np.array_equal(other.state["v"], opt.state["v"])
    with pytest.raises(ValueError, match="lacks"):
        other.load_state_dict({"m": state["m"], "steps": 1})
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict({**state, "v": np.zeros(3)})


@pytest.mark.parametrize("kw,match", [
    (dict(name="adam", betas=(0.9, 1.0)), "beta2"), (dict(name="adam", betas=0.9), "betas"),
    (dict(name="rmsprop", decay=-0.1), "decay"), (dict(name="sgd", lr=0), "lr"),
    (dict(name="adam", clip_norm=0), "clip_norm"), (dict(name="nesterov"), "unknown optimizer"),
])
def test_bad_hyperparameters(kw, match):
    m = fastrnn.CharRNN(5, 4, backend="numpy")
    name = kw.pop("name")
    with pytest.raises(ValueError, match=match):
        fastrnn.make_optimizer(name, m, **kw)


def test_kernel_update_wrapper_rejects():
    n = K.num_params(4, 5)
    P, G = np.zeros(n), np.zeros(n)
    ok = dict(lr=0.1, eps=1e-8, clip=None)
    with pytest.raises(ValueError, match="state 2"):
        K.optimizer_update(P, G, np.zeros(n), None, K.OPTIMIZERS["adam"], **ok)
    with pytest.raises(ValueError, match="state 1"):
        K.optimizer_update(P, G, np.zeros(n - 1), None, K.OPTIMIZERS["rmsprop"], **ok)
    for bad in (dict(beta1=1.0), dict(beta2=-0.5), dict(step=0), dict(step=1.5),
                dict(clip_norm=-1.0), dict(grad_scale=0.0), dict(grad_scale=math.nan)):
        with pytest.raises(ValueError):
            K.optimizer_update(P, G, np.zeros(n), np.zeros(n), K.OPTIMIZERS["adam"],
                               **{**ok, **bad})
    with pytest.raises(ValueError, match="optimizer code"):
        K.optimizer_update(P, G, None, None, 7, **ok)
    assert K.optimizer_update(P, G + 3.0, None, None, K.OPTIMIZERS["sgd"], lr=0.1,
                              clip_norm=1.0) == pytest.approx(3.0 * math.sqrt(n))


def _adagrad_reference(P, G, M, lr, eps, clip):
    """The gist's float32 step in numpy, and each element's step lr*g/sqrt(M+eps) in float64."""
    g = G if clip is None else np.clip(G, -clip, clip)
    M2 = M + g * g
    with np.errstate(all="ignore"):
        P2 = P - np.float32(lr) * g / np.sqrt(M2 + np.float32(eps))
        step = np.float64(np.float32(lr)) * g / np.sqrt(M2.astype(np.float64) + np.float32(eps))
    return P2, M2, step


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("clip", [5.0, None])
def test_float32_adagrad_matches_numpy_to_rounding_on_every_variant(isa, clip):
    """float32 Adagrad takes 1/sqrt(M + eps) from the CPU's estimate refined by Newton steps
    where the variant has one (_adagrad.h): M is numpy's bit for bit, P numpy's to within an
    ulp of P plus 2^-21 of the step; where M + eps is not a normal finite float (here M = inf or
    NaN, and a subnormal eps) the lanes take the exact path, so non-finite results are numpy's;
    and the same element gets the same value wherever a call's range starts (the update split
    over threads must equal the one-pass update exactly), the last partial vector included."""
    from fastrnn.backends.cython_backend import load_kernels
    try:
        CK = load_kernels(isa)
    except ImportError as exc:
        pytest.skip(f"{isa} kernels not usable here: {exc}")
    rng = np.random.default_rng(8)
    n = 1013  # not a whole number of vectors
    for eps in (1e-8, 1e-40):
        P = rng.normal(0, 0.1, n).astype(np.float32)
        G = (rng.normal(0, 1, n) * 10.0 ** rng.integers(-8, 2, n)).astype(np.float32)
        M = (rng.random(n) * 10.0 ** rng.integers(-12, 3, n)).astype(np.float32)
        M[rng.random(n) < 0.2] = 0
        M[[3, 500, n - 1]] = np.inf, np.nan, np.inf
        G[[7, n - 2]] = np.nan, np.inf
        P_want, M_want, step = _adagrad_reference(P, G, M, 0.1, eps, clip)
        P1, M1 = P.copy(), M.copy()
        CK.optimizer_update(P1, G, M1, None, CK.OPTIMIZERS["adagrad"], 0.1, eps, clip)
        assert np.array_equal(M1, M_want, equal_nan=True)
        finite = np.isfinite(P_want)
        assert np.array_equal(P1[~finite], P_want[~finite], equal_nan=True)
        assert (~finite).sum() >= 2
        err = np.abs(P1[finite].astype(np.float64) - P_want[finite])
        ulp = np.spacing(np.abs(P_want[finite]))
        assert (err <= ulp + 2.0 ** -21 * np.abs(step[finite])).all()
        # the same values when the range is cut at arbitrary places
        P2, M2 = P.copy(), M.copy()
        for a, b in [(0, 5), (5, 21), (21, 22), (22, 600), (600, n)]:
            CK.optimizer_update(P2[a:b], G[a:b], M2[a:b], None, CK.OPTIMIZERS["adagrad"], 0.1,
                                eps, clip)
        assert np.array_equal(P2, P1, equal_nan=True) and np.array_equal(M2, M1, equal_nan=True)


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_float32_guarded_adagrad_step_on_every_variant(isa):
    """The guarded fused step on the fast path: kept, it equals the unguarded step bit for bit;
    a non-finite state in the last partial vector undoes it, leaving everything as it was."""
    from fastrnn.backends.cython_backend import load_kernels
    try:
        CK = load_kernels(isa)
    except ImportError as exc:
        pytest.skip(f"{isa} kernels not usable here: {exc}")
    rng = np.random.default_rng(9)
    H, V, B, T = 12, 9, 2, 5
    n = CK.num_params(H, V)
    assert n % 16 != 0
    P = rng.normal(0, 0.1, n).astype(np.float32)
    M = rng.random(n).astype(np.float32)
    x, y = (rng.integers(0, V, (B, T)).astype(np.int32) for _ in range(2))
    h = rng.normal(0, 0.5, (B, H)).astype(np.float32)
    work = np.empty(CK.work_size(B, T, H, V), np.float32)
    undo = np.empty(CK.undo_size(n, CK.OPTIMIZERS["adagrad"]), np.float32)
    kw = dict(optimizer=CK.OPTIMIZERS["adagrad"], lr=0.1, eps=1e-8, clip=5.0)
    P1, M1, h1 = P.copy(), M.copy(), h.copy()
    CK.train_step(P1, np.empty_like(P), M1, x, y, h1, work, H, V, **kw)
    P2, M2, h2 = P.copy(), M.copy(), h.copy()
    loss, taken = CK.train_step(P2, np.empty_like(P), M2, x, y, h2, work, H, V, undo=undo, **kw)
    assert taken and np.array_equal(P2, P1) and np.array_equal(M2, M1)
    assert np.array_equal(h2, h1) and not np.array_equal(P1, P)
    M[-1] = np.inf  # by's last unit: its update makes M inf (and P is still finite)
    P3, M3, h3 = P.copy(), M.copy(), h.copy()
    loss, taken = CK.train_step(P3, np.empty_like(P), M3, x, y, h3, work, H, V, undo=undo, **kw)
    assert np.isfinite(loss) and not taken
    assert np.array_equal(P3, P) and np.array_equal(M3, M) and np.array_equal(h3, h)
