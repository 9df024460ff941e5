"""precision="bf16": the rounding helper, the numpy reference against hand computation and
against float32, the torch backend's autocast, validation, checkpoints, generation, and the
compiled kernels (those tests skip until the kernels have the bf16 mode)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.backends.numpy_backend import bf16

U = 2.0 ** -8      # bfloat16's unit roundoff: 8 significand bits, round to nearest
EPS32 = 2.0 ** -24  # float32's
MODELS = [dict(cell="rnn", nonlinearity="relu"), dict(cell="rnn", num_layers=2),
          dict(cell="rnn", num_layers=2, nonlinearity="relu"), dict(cell="lstm"),
          dict(cell="lstm", num_layers=2), dict(cell="gru"), dict(cell="gru", num_layers=2),
          dict()]  # the last: min-char-rnn's (one tanh rnn layer)
IDS = lambda m: "-".join(f"{v}" for v in m.values()) or "legacy"  # noqa: E731


def bits(x):
    return int(np.float32(x).view(np.uint32))


def from_bits(b):
    return np.uint32(b).view(np.float32)


# -- the rounding helper -------------------------------------------------------------------------

@pytest.mark.parametrize("x, want", [
    (1.0, 1.0),
    (1 + 2 ** -9, 1.0),                       # below half an ulp (2^-7 in [1, 2)): down
    (1 + 2 ** -8, 1.0),                       # a tie, kept part even (…0): stays
    (1 + 3 * 2 ** -8, 1 + 2 ** -6),           # a tie, kept part odd (…1): up to even
    (1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7),    # just above a tie: up
    (-(1 + 3 * 2 ** -8), -(1 + 2 ** -6)),     # the sign is kept, magnitudes round alike
    (2 - 2 ** -9, 2.0),                       # rounds up into the next binade
    (np.float32(3.4028235e38), np.inf),       # float32's largest rounds past bf16's
    (-0.0, -0.0), (np.inf, np.inf), (-np.inf, -np.inf),
])
def test_bf16_rounds_to_nearest_even(x, want):
    got = bf16(np.float32(x))
    assert got.dtype == np.float32 and bits(got) == bits(want), (x, got, want)


def test_bf16_edges_given_as_bit_patterns():
    cases = {0x7F7F7FFF: 0x7F7F0000,   # just under the tie above bf16's largest: down
             0x7F7F8000: 0x7F800000,   # that tie, kept part odd: to infinity
             0x00018000: 0x00020000,   # subnormal tie, kept part odd: up
             0x00008000: 0x00000000,   # subnormal tie, kept part even: to zero
             0x3F80FFFF: 0x3F810000}   # a carry through all dropped bits
    for b, want in cases.items():
        assert bits(bf16(from_bits(b))) == want, hex(b)
    for nan in (0x7FC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF):
        # 0x7F800001: a NaN whose payload lies in the dropped bits; truncation would give inf
        assert np.isnan(bf16(from_bits(nan))), hex(nan)


def test_bf16_matches_torch_and_the_error_bound():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * 10.0 ** rng.uniform(-30, 30, 100_000)).astype(np.float32)
    x[:4096] = (np.arange(4096, dtype=np.uint32) << 4).view(np.float32) + np.float32(1)
    got = bf16(x.reshape(100, 1000)).reshape(-1)
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()  # RNE as well
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert not np.any(got.view(np.uint32) & 0xFFFF)
    assert np.all(np.abs(got.astype(np.float64) - x) <= U * np.abs(x.astype(np.float64)))


# -- the numpy reference -------------------------------------------------------------------------

def _legacy_by_hand(p, x, y, h0):
    """min-char-rnn's model in bf16 mode, written out: forward, loss and BPTT with the operands
    of each product rounded (float32 arithmetic, the numpy backend's formulas)."""
    R = bf16
    f = {k: np.asarray(v, np.float32) for k, v in p.items()}
    B, T = x.shape
    hs, h = [h0], h0
    for t in range(T):
        h = np.tanh(f["Wxh"][:, x[:, t]].T + f["bh"] + R(h) @ R(f["Whh"]).T)  # exact gather
        hs.append(h)
    loss, g = 0.0, {k: np.zeros_like(v) for k, v in f.items()}
    dnext = np.zeros_like(h0)
    for t in reversed(range(T)):
        z = R(hs[t + 1]) @ R(f["Why"]).T + f["by"]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        loss += float(np.sum(np.log(e.sum(1)) - z[np.arange(B), y[:, t]]))
        dz = e / e.sum(1, keepdims=True)
        dz[np.arange(B), y[:, t]] -= 1
        g["Why"] += R(dz).T @ R(hs[t + 1])
        g["by"] += dz.sum(0)
        dpre = (R(dz) @ R(f["Why"]) + dnext) * (1 - hs[t + 1] ** 2)
        g["Whh"] += R(dpre).T @ R(hs[t])
        g["bh"] += dpre.sum(0)
        np.add.at(g["Wxh"].T, x[:, t], dpre)                                  # exact scatter
        dnext = R(dpre) @ R(f["Whh"])
    return loss, g


def test_numpy_bf16_rounds_exactly_the_product_operands():
    rng = np.random.default_rng(1)
    V, H, B, T = 7, 5, 3, 4
    model = fastrnn.CharRNN(V, H, backend="numpy", precision="bf16")
    p = {k: rng.normal(0, 0.6, v.shape) for k, v in model.get_params().items()}
    model.set_params(p)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = rng.normal(0, 0.5, (B, H)).astype(np.float32)
    loss, grads, _ = model.loss_and_grads(x, y, h0)
    want, g = _legacy_by_hand(model.get_params(), x, y, h0)
    assert loss == pytest.approx(want, rel=1e-6)
    for k in g:
        assert np.allclose(grads[k], g[k], rtol=1e-4, atol=1e-6), k
    # the test tells the roundings apart: float32 products, or a rounded gather, differ more
    fp32 = fastrnn.CharRNN(V, H, backend="numpy")
    fp32.set_params(model.get_params())
    assert abs(fp32.loss(x, y, h0)[0] - want) > 20 * 1e-6 * want
    rounded_gather = dict(model.get_params(), Wxh=bf16(model.get_params()["Wxh"]))
    assert abs(_legacy_by_hand(rounded_gather, x, y, h0)[0] - want) > 20 * 1e-6 * want


def _head_bound(model, x):
    """The bound on |loss(bf16) - loss(fp32)| of a one-step chunk from the zero state, derived:
    the state is then the same in both (layer 0 gathers exactly, and the recurrent product of
    a zero state is 0 either way), so only the head's product differs. Each of its terms
    Why_vk h_k becomes Why_vk h_k (1 + d1)(1 + d2), |d| <= u, an error <= (2u + u^2) |Why_vk
    h_k|; float32 sums these (H terms and the bias) within gamma = (H+1) eps32 / (1 - (H+1)
    eps32) of the sum of magnitudes in each mode. A token's loss, log sum exp z - z_y, has
    gradient p - onehot(y), of l1 norm <= 2, so it moves at most 2 max_v |dz_v|. Plus the loss's
    own float32 evaluation, 8 eps32 per token relative."""
    H = model.hidden_size
    p = {k: v.astype(np.float64) for k, v in model.get_params().items()}
    # the state after the step, in float64 (its float32 rounding is the same in both modes)
    numpy_twin = fastrnn.CharRNN(model.vocab_size, H, cell=model.cell,
                                 num_layers=model.num_layers, nonlinearity=model.nonlinearity,
                                 backend="numpy", dtype="float64")
    numpy_twin.set_params(model.get_params())
    layers, _ = numpy_twin._backend.trace(x[0])
    h = np.abs(layers[-1]["h"][0])
    terms = np.abs(p["Why"]) @ h
    gamma = (H + 1) * EPS32 / (1 - (H + 1) * EPS32)
    dz = (2 * U + U * U) * terms + 2 * gamma * (terms + np.abs(p["by"]))
    return 2 * dz.max()


@pytest.mark.parametrize("kw", [m for m in MODELS if m.get("num_layers", 1) == 1], ids=IDS)
def test_numpy_bf16_head_within_the_derived_bound(kw):
    rng = np.random.default_rng(2)
    V, H = 30, 48
    fp32 = fastrnn.CharRNN(V, H, backend="numpy", init="uniform", seed=3, **kw)
    p = {k: v * 3 for k, v in fp32.get_params().items()}  # logits of realistic size
    fp32.set_params(p)
    bf = fastrnn.CharRNN(V, H, backend="numpy", precision="bf16", **kw)
    bf.set_params(p)
    x, y = rng.integers(0, V, (1, 1)), rng.integers(0, V, (1, 1))
    a, b = fp32.loss(x, y)[0], bf.loss(x, y)[0]
    bound = _head_bound(fp32, x) + 8 * EPS32 * abs(a)
    assert a != b and abs(a - b) <= bound, (a, b, bound)


@pytest.mark.parametrize("kw", MODELS, ids=IDS)
def test_numpy_bf16_close_to_float32(kw):
    """A chunk of T steps through L layers against float32. First-order bound: each rounded
    product's result moves by at most 2u' sum |a||b| (u' = u + u^2/2); the weights are scaled
    so each matrix has max row sum rho = 1/2 (no layer expands an error it is handed; states
    and gates are at most 1 in size, relu's kept small by the scale), so the errors of the at
    most T*L + 1 products between an input and a logit add: |dz| <= (T*L + 1) 2u' S with S the
    head's max row sum, and a token's loss moves at most 2 |dz|. Gradients: their products and
    those of the forward pass, 2 (T*L + 1) of them on a path, each a relative 2u' of the
    largest gradient."""
    rng = np.random.default_rng(4)
    V, H, B, T = 17, 24, 3, 6
    fp32 = fastrnn.CharRNN(V, H, backend="numpy", init="uniform", seed=5, **kw)
    p = fp32.get_params()
    for name, w in p.items():
        if w.ndim == 2 and not (name.startswith("weight_ih_l0") or name == "Wxh"):
            p[name] = w * (0.5 / np.abs(w).sum(axis=1).max())
    p = {k: v * (4 if k == "Why" else 1) for k, v in p.items()}
    fp32.set_params(p)
    bf = fastrnn.CharRNN(V, H, backend="numpy", precision="bf16", **kw)
    bf.set_params(p)
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = None if not fp32.spec.legacy else rng.normal(0, 0.3, (B, H))
    la, ga, _ = fp32.loss_and_grads(x, y, h0)
    lb, gb, _ = bf.loss_and_grads(x, y, h0)
    L = fp32.num_layers
    u2 = 2 * U + U * U
    S = np.abs(p["Why"]).sum(axis=1).max()
    assert la != lb and abs(la - lb) <= B * T * 2 * (T * L + 1) * u2 * S, (la, lb)
    scale = max(np.abs(g).max() for g in ga.values())
    worst = max(np.abs(gb[k] - ga[k]).max() for k in ga) / scale
    assert 0 < worst <= 2 * (T * L + 1) * u2, worst


def test_generation_priming_and_trace_run_float32_products():
    rng = np.random.default_rng(6)
    vocab = fastrnn.Vocab.from_text("abcdefgh ")
    for kw in (dict(), dict(cell="lstm", num_layers=2)):
        a = fastrnn.CharRNN(vocab, 16, backend="numpy", seed=7, **kw)
        b = fastrnn.CharRNN(vocab, 16, backend="numpy", precision="bf16", **kw)
        b.set_params({k: v * 40 for k, v in a.get_params().items()})
        a.set_params(b.get_params())
        ids = rng.integers(0, 9, 30)
        assert np.array_equal(a.generate(60, prime_ids=ids, seed=1),
                              b.generate(60, prime_ids=ids, seed=1))
        beams = a.beam_search(20, 3, prime_ids=ids), b.beam_search(20, 3, prime_ids=ids)
        assert np.array_equal(beams[0][0], beams[1][0]) and beams[0][1] == beams[1][1]
        # (priming through bf16 products would have given another state)
        primed, run = (b._initial_state(None, 1, True) for _ in range(2))
        b._backend.prime(ids[None, :], primed)
        b._backend.forward_loss(ids[None, :], None, run)
        assert not np.array_equal(primed[0], run[0])
        assert np.array_equal(a._backend.trace(ids)[1], b._backend.trace(ids)[1])
        # while the loss does see the rounding
        x, y = ids[None, :-1], ids[None, 1:]
        assert a.loss(x, y)[0] != b.loss(x, y)[0]


# -- the torch backend: autocast -----------------------------------------------------------------

def _pair(kw, backend, device="cpu", V=17, H=24, seed=8):
    ref = fastrnn.CharRNN(V, H, backend="numpy", precision="bf16", init="uniform", seed=seed,
                          **kw)
    other = fastrnn.CharRNN(V, H, backend=backend, precision="bf16", device=device, **kw)
    other.set_params(ref.get_params())
    return ref, other


def _torch_close_to_numpy(kw, ref, tb, seed):
    """One chunk's loss and gradients on torch in bf16 against the numpy reference (see
    test_torch_bf16_close_to_numpy_bf16 for the tolerances); returns the chunk, the reference
    loss, torch's gradients and both final states."""
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 17, (3, 10)), rng.integers(0, 17, (3, 10))
    la, ga, sa = ref.loss_and_grads(x, y)
    lb, gb, sb = tb.loss_and_grads(x, y)
    assert abs(la - lb) <= 2e-3 * abs(la), (la, lb)
    scale = max(np.abs(g).max() for g in ga.values())
    tol = 0.1 if kw.get("nonlinearity") == "relu" else 8 * U
    assert max(np.abs(gb[k] - ga[k]).max() for k in ga) <= tol * scale
    return x, y, la, gb, sa, sb


@pytest.mark.parametrize("stepwise", [False, True], ids=["fused", "stepwise"])
@pytest.mark.parametrize("kw", MODELS, ids=IDS)
def test_torch_bf16_close_to_numpy_bf16(kw, stepwise, monkeypatch):
    """Loose: autocast also rounds each product's result to bfloat16 (its output dtype), and
    on the CPU its fused layers keep their states in bfloat16 and multiply layer 0's one-hot
    rows (so W_ih_l0 is rounded too); each adds relative errors of order u = 2^-8 per step. The
    stepwise formulation is the one CUDA runs, tried here on the CPU. relu's gradients get
    a tenth of the largest: its derivative jumps at 0, so a unit whose pre-activation lies
    within rounding of 0 has its gradient on in one run and off in the other."""
    pytest.importorskip("torch")
    from fastrnn.backends.torch_backend import TorchBackend
    monkeypatch.setattr(TorchBackend, "_stepwise_bf16", stepwise)
    ref, tb = _pair(kw, "torch")
    x, y, la, gb, sa, sb = _torch_close_to_numpy(kw, ref, tb, seed=9)
    assert all(g.dtype == np.float32 for g in gb.values())
    assert tb.loss(x, y)[0] == pytest.approx(la, rel=2e-3)
    for a, b in zip(*(s if isinstance(s, tuple) else (s,) for s in (sa, sb))):
        assert b.dtype == np.float32 and np.abs(a - b).max() <= 16 * U


@pytest.mark.skipif("not __import__('fastrnn')._optional.cuda_available()",
                    reason="needs CUDA")
@pytest.mark.parametrize("kw", MODELS, ids=IDS)
def test_torch_bf16_on_cuda_close_to_numpy_bf16(kw):
    ref, tb = _pair(kw, "torch", device="cuda")
    _torch_close_to_numpy(kw, ref, tb, seed=10)


def test_torch_bf16_trains_and_keeps_float32_masters():
    torch = pytest.importorskip("torch")
    vocab = fastrnn.Vocab.from_text("abcdefgh ")
    ids = vocab.encode("abc def gh " * 40)
    for kw in (dict(), dict(cell="gru", num_layers=2, dropout=0.1)):
        m = fastrnn.CharRNN(vocab, 16, backend="torch", precision="bf16", **kw)
        t = fastrnn.Trainer(m, ids, seq_length=10, batch_size=4)
        first = t.step()
        for _ in range(30):
            last = t.step()
        assert last < first and m._backend.flat.dtype == torch.float32


# -- validation, repr, checkpoints ---------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "cython", "torch"])
def test_precision_validation(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    for bad in ("fp16", "BF16", None, 16):
        with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16'"):
            fastrnn.CharRNN(5, 4, backend=backend, precision=bad)
    with pytest.raises(ValueError, match="needs dtype='float32'.*float64"):
        fastrnn.CharRNN(5, 4, backend=backend, dtype="float64", precision="bf16")
    assert fastrnn.CharRNN(5, 4, backend=backend).precision == "fp32"


def test_repr_names_a_precision_other_than_fp32():
    assert "precision" not in repr(fastrnn.CharRNN(5, 4, backend="numpy"))
    assert repr(fastrnn.CharRNN(5, 4, backend="numpy", cell="gru", precision="bf16")).endswith(
        "precision='bf16')")


def test_checkpoint_keeps_the_precision(tmp_path):
    from fastrnn.checkpoint import CheckpointError, read_npz, write_npz_atomic
    m = fastrnn.CharRNN(fastrnn.Vocab.from_text("abc"), 8, cell="lstm", backend="numpy",
                        precision="bf16", seed=2)
    m.save(tmp_path / "m.npz")
    arrays = read_npz(tmp_path / "m.npz")
    assert str(arrays["precision"]) == "bf16"
    back = fastrnn.CharRNN.load(tmp_path / "m.npz", backend="numpy")
    assert back.precision == "bf16" and back.vocab.chars == m.vocab.chars
    assert all(np.array_equal(a, back.get_params()[k]) for k, a in m.get_params().items())
    assert fastrnn.CharRNN.load(tmp_path / "m.npz", backend="numpy",
                                precision="fp32").precision == "fp32"
    # float32 files stay as they were (readable by earlier versions), and load as fp32
    fastrnn.CharRNN(5, 4, backend="numpy").save(tmp_path / "f.npz")
    assert "precision" not in read_npz(tmp_path / "f.npz")
    assert fastrnn.CharRNN.load(tmp_path / "f.npz", backend="numpy").precision == "fp32"
    for value, match in ((np.array("fp8"), "precision must be"), (np.array(1), "must be a str"),
                         (np.array(["bf16"]), "must be a str")):
        write_npz_atomic(tmp_path / "bad.npz", dict(arrays, precision=value))
        with pytest.raises(CheckpointError, match=match):
            fastrnn.CharRNN.load(tmp_path / "bad.npz", backend="numpy")
    write_npz_atomic(tmp_path / "bad.npz", dict(arrays, dtype=np.array("float64")))
    with pytest.raises(CheckpointError, match="needs dtype='float32'"):
        fastrnn.CharRNN.load(tmp_path / "bad.npz", backend="numpy")
    # given dtype float64 and fp32: the bf16 file's weights in a float64 model
    m64 = fastrnn.CharRNN.load(tmp_path / "m.npz", backend="numpy", dtype="float64",
                               precision="fp32")
    assert m64.dtype == np.float64 and m64.precision == "fp32"


def test_trainer_resume_keeps_the_precision(tmp_path):
    vocab = fastrnn.Vocab.from_text("abcdefgh ")
    ids = vocab.encode("abc def gh " * 40)
    m = fastrnn.CharRNN(vocab, 12, backend="numpy", precision="bf16")
    t = fastrnn.Trainer(m, ids, seq_length=8, batch_size=2)
    t.fit(3)
    t.save(tmp_path / "run.npz")
    again = fastrnn.Trainer.load(tmp_path / "run.npz", ids, backend="numpy")
    assert again.model.precision == "bf16"
    assert again.step() == t.step()  # the same next iteration, bf16 products in both


# -- the compiled kernels ----------------------------------------------------------------------

def _kernels():
    from fastrnn.backends import cython_backend
    if cython_backend._kernels is None:
        pytest.skip("the compiled kernels are not built")
    return cython_backend


def test_cython_refuses_bf16_without_the_kernels_mode(monkeypatch):
    cb = _kernels()
    monkeypatch.setattr(cb, "has_bf16", lambda kernels: False)  # as kernels built before it
    with pytest.raises(ValueError, match="precision='bf16' on backend 'cython' needs kernels"):
        fastrnn.CharRNN(5, 4, precision="bf16")


def _env_import(value, cwd):
    # cwd outside the checkout: from its root, `import fastrnn` would find the uncompiled sources
    env = dict(os.environ, FASTRNN_BF16=value)
    code = ("import fastrnn\nfrom fastrnn.backends import cython_backend as c\n"
            "try:\n    fastrnn.CharRNN(5, 4)\nexcept ImportError as e:\n    print('ERR', e)\n"
            "else:\n    print('PATH', c.bf16_path())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_fastrnn_bf16_env_names_a_path(tmp_path):
    cb = _kernels()
    refused = _env_import("tile", tmp_path)
    assert refused.startswith("ERR fastrnn's compiled kernels: FASTRNN_BF16='tile': ")
    assert "Rebuild" not in refused  # the kernels are fine; the setting is what to change
    if not cb.has_bf16(cb._kernels):
        assert "built without the bf16 mode" in _env_import("fp32", tmp_path)
        return
    assert _env_import("fp32", tmp_path) == "PATH fp32"


needs_bf16 = pytest.mark.skipif(
    "not __import__('fastrnn.backends.cython_backend').backends.cython_backend.has_bf16("
    "__import__('fastrnn.backends.cython_backend').backends.cython_backend._kernels)",
    reason="the compiled kernels lack the bf16 mode (bf16_path)")


@pytest.fixture
def bf16_kernels():
    """The kernel module; its bf16 path is restored after the test."""
    cb = _kernels()
    saved = cb._kernels.bf16_path()
    yield cb._kernels
    cb._kernels.set_bf16_path(saved)


def _paths(K):
    """The path the kernels chose, and "fp32" (plain float32 products, in every build)."""
    return list(dict.fromkeys([K.bf16_path(), "fp32"]))


@needs_bf16
def test_bf16_path_names_and_refusals(bf16_kernels):
    K = bf16_kernels
    from fastrnn.backends.cython_backend import bf16_description
    assert bf16_description(K).startswith(K.bf16_path())
    for bad in ("tile", "", "FP32"):
        with pytest.raises(ValueError):
            K.set_bf16_path(bad)
    K.set_bf16_path("fp32")
    assert K.bf16_path() == "fp32"


@needs_bf16
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 33, 5), (64, 256, 48), (3, 1000, 17)])
def test_bf16_matmul_within_the_derived_bound(bf16_kernels, shape):
    """|C - A B| <= (2u + u^2) sum_k |a_ik b_kj| (each operand rounded, relative u each; the
    product of two bfloat16 values is exact in float32) + gamma_K sum_k |a~_ik b~_kj| (float32
    accumulation of K terms, gamma_K = K eps32 / (1 - K eps32)), against float64. Where bf16
    instructions run, C is also the float32 sum of the rounded operands' products: within
    gamma_K of the float64 product of bf16(A) and bf16(B)."""
    K = bf16_kernels
    M, Kd, N = shape
    rng = np.random.default_rng(Kd)
    A = (rng.standard_normal((M, Kd)) * np.exp(rng.uniform(-3, 3, (M, Kd)))).astype(np.float32)
    B = (rng.standard_normal((Kd, N)) * np.exp(rng.uniform(-3, 3, (Kd, N)))).astype(np.float32)
    gamma = Kd * EPS32 / (1 - Kd * EPS32)
    Ar, Br = bf16(A).astype(np.float64), bf16(B).astype(np.float64)
    mags = np.abs(A.astype(np.float64)) @ np.abs(B.astype(np.float64))
    for path in _paths(K):
        K.set_bf16_path(path)
        C = K.bf16_matmul(A, B)
        assert C.shape == (M, N) and C.dtype == np.float32
        err = np.abs(C - A.astype(np.float64) @ B.astype(np.float64))
        assert np.all(err <= (2 * U + U * U) * mags + gamma * (np.abs(Ar) @ np.abs(Br))), path
        if path != "fp32":
            assert np.all(np.abs(C - Ar @ Br) <= gamma * (np.abs(Ar) @ np.abs(Br))), path


@needs_bf16
def test_bf16_matmul_accumulates_in_float32(bf16_kernels):
    K = bf16_kernels
    for path in _paths(K):
        K.set_bf16_path(path)
        # 4096 ones: exact in float32; a bfloat16 accumulator stalls at 256 (256 + 1 rounds
        # back to 256 with 8 significand bits)
        C = K.bf16_matmul(np.ones((3, 4096), np.float32), np.ones((4096, 2), np.float32))
        assert np.array_equal(C, np.full((3, 2), 4096, np.float32)), path
        # 1 + 255 * 2^-8: each term exact in bfloat16, the sum needs float32's bits
        a = np.full((1, 256), 2.0 ** -8, np.float32)
        a[0, 0] = 1
        C = K.bf16_matmul(a, np.ones((256, 1), np.float32))
        assert C[0, 0] == np.float32(1 + 255 * 2.0 ** -8), path


def _chunk(V, B=3, T=9, seed=11):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


@needs_bf16
@pytest.mark.parametrize("kw", MODELS, ids=IDS)
def test_cython_bf16_matches_the_numpy_reference(bf16_kernels, kw):
    """Loss to 1e-4 relative. Gradients: the kernels sum in another order than numpy, so a
    float32 value feeding a later product can differ in its last bits and round to the
    neighbouring bfloat16 (a relative 2u move of that operand); allowed: 4u of the largest
    gradient (relu: a tenth, see test_torch_bf16_close_to_numpy_bf16). The "fp32" path runs
    float32 products: it equals fp32 mode instead (exactly for the stacked models, which run
    the same kernels; to 1e-5 for min-char-rnn's, whose fp32 mode has kernels of its own)."""
    K = bf16_kernels
    V, H = 23, 32
    x, y = _chunk(V)
    for path in _paths(K):
        K.set_bf16_path(path)
        ref = fastrnn.CharRNN(V, H, backend="numpy", precision="bf16", init="uniform", seed=12,
                              **kw)
        if path == "fp32":
            ref = fastrnn.CharRNN(V, H, backend="cython", init="uniform", seed=12, **kw)
        cy = fastrnn.CharRNN(V, H, backend="cython", precision="bf16", **kw)
        cy.set_params(ref.get_params())
        la, ga, sa = ref.loss_and_grads(x, y, return_dh0=True)
        lb, gb, sb = cy.loss_and_grads(x, y, return_dh0=True)
        if path == "fp32" and not cy.spec.legacy:
            assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in ga), path
            continue
        tol = 1e-5 if path == "fp32" else 0.1 if kw.get("nonlinearity") == "relu" else 4 * U
        assert abs(la - lb) <= (1e-5 if path == "fp32" else 1e-4) * abs(la), (path, la, lb)
        scale = max(np.abs(np.asarray(g)).max() for k, g in ga.items() if k != "h0")
        for k in ga:
            a, b = (np.asarray(ga[k]), np.asarray(gb[k])) if k != "h0" else \
                (np.concatenate([np.ravel(v) for v in np.atleast_1d(ga[k])]),
                 np.concatenate([np.ravel(v) for v in np.atleast_1d(gb[k])]))
            assert np.abs(a - b).max() <= tol * scale, (path, k)
        assert cy.loss(x, y)[0] == pytest.approx(la, rel=1e-4)


@needs_bf16
@pytest.mark.parametrize("kw", [dict(), dict(cell="lstm", num_layers=2, dropout=0.2)],
                         ids=IDS)
def test_cython_bf16_training_steps_follow_the_reference(bf16_kernels, kw):
    """Fused (and guarded) train steps, dropout masks included, against the numpy backend's
    loss_and_grads + update in bf16 mode: 5 Adam steps, losses to 1e-3 relative."""
    if bf16_kernels.bf16_path() == "fp32":
        pytest.skip("no bfloat16 instructions here: float32 products, tested above")
    V, H = 19, 24
    ids = np.random.default_rng(13).integers(0, V, 2000)
    losses = {}
    for backend in ("numpy", "cython"):
        m = fastrnn.CharRNN(V, H, backend=backend, precision="bf16", seed=14, **kw)
        t = fastrnn.Trainer(m, ids, seq_length=12, batch_size=4, seed=1,
                            nan_policy="skip" if backend == "cython" else "raise")
        losses[backend] = [t.step() for _ in range(5)]
    assert np.allclose(losses["numpy"], losses["cython"], rtol=1e-3)
