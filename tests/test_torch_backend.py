"""The torch backend against the numpy reference, on the CPU and (when present) on CUDA."""
import numpy as np
import pytest

import fastrnn
from conftest import random_params, rel_err
from torch_helpers import DEVICES, needs_cuda, torch

TOL = {"float64": 1e-10, "float32": 1e-4}
SHAPES = [(1, 1, 1, 1), (1, 25, 100, 77), (4, 10, 32, 20), (16, 7, 64, 65), (3, 40, 17, 128)]


def pair(V, H, dtype, params, device):
    ref = fastrnn.CharRNN(V, H, backend="numpy", dtype=dtype)
    fast = fastrnn.CharRNN(V, H, backend="torch", dtype=dtype, device=device)
    for m in (ref, fast):
        m.set_params(params)
    return ref, fast


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B,T,H,V", SHAPES)
def test_loss_grads_state_match_numpy(device, dtype, B, T, H, V):
    rng = np.random.default_rng(B * 1000 + T + H + V)
    ref, fast = pair(V, H, dtype, random_params(H, V, rng), device)
    shape = (T,) if B == 1 else (B, T)
    x, y = rng.integers(0, V, shape), rng.integers(0, V, shape)
    h0 = rng.normal(0, 0.5, (H,) if B == 1 else (B, H))
    l1, g1, h1 = ref.loss_and_grads(x, y, h0, return_dh0=True)
    l2, g2, h2 = fast.loss_and_grads(x, y, h0, return_dh0=True)
    tol = TOL[dtype]
    assert abs(l1 - l2) <= tol * abs(l1)
    assert h1.shape == h2.shape == np.shape(h0) and h2.dtype == np.dtype(dtype)
    assert rel_err(h1, h2) <= tol
    assert set(g1) == set(g2)
    for k in g1:
        assert g1[k].dtype == g2[k].dtype == np.dtype(dtype) and g1[k].shape == g2[k].shape
        assert rel_err(g1[k], g2[k]) <= tol, k
    l3, h3 = fast.loss(x, y, h0)  # the forward-only path
    assert abs(l3 - l1) <= tol * abs(l1) and rel_err(h3, h1) <= tol
    if V > 1:
        assert l1 > 0 and rel_err(g1["Whh"], 0 * g1["Whh"]) > 0  # a non-trivial case


@pytest.mark.parametrize("device", DEVICES)
def test_repeated_ids_accumulate_and_zero_state_default(device):
    rng = np.random.default_rng(0)
    H, V = 8, 3
    ref, fast = pair(V, H, "float64", random_params(H, V, rng), device)
    x = np.array([[2, 2, 2, 2, 0], [2, 1, 2, 2, 2]])
    y = np.array([[2, 2, 1, 2, 0], [0, 1, 2, 2, 2]])
    assert fast.loss_and_grads(x, y)[0] == fast.loss_and_grads(x, y, np.zeros((2, H)))[0]
    g1, g2 = ref.loss_and_grads(x, y)[1], fast.loss_and_grads(x, y)[1]
    assert rel_err(g1["Wxh"], g2["Wxh"]) <= 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip", [5.0, 0.01, None])
def test_adagrad_step_matches_formula(device, dtype, clip):
    rng = np.random.default_rng(1)
    H, V = 9, 7
    params = random_params(H, V, rng)
    grads = {k: rng.normal(0, 3, v.shape) for k, v in params.items()}
    _, m = pair(V, H, dtype, params, device)
    opt = fastrnn.Adagrad(m, lr=0.05, clip=clip)
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    expected = {k: v.astype(dtype) for k, v in params.items()}
    for _ in range(3):
        for k in expected:  # the gist's update, written out
            g = grads[k].astype(dtype)
            if clip is not None:
                g = np.clip(g, -clip, clip)
            mem[k] += g * g
            expected[k] -= 0.05 * g / np.sqrt(mem[k] + 1e-8)
        opt.step(grads)
    got = m.get_params()
    for k in expected:
        assert rel_err(got[k], expected[k]) <= TOL[dtype], k
    assert np.all(grads["by"] == grads["by"])
    state = opt.state["mem"]
    assert isinstance(state, torch.Tensor) and state.device.type == device


def gist_run(backend, device, ids, vocab, iterations, **kw):
    m = fastrnn.CharRNN(vocab, kw.pop("hidden", 100), backend=backend, dtype="float64", seed=0,
                        device=device)
    opt = fastrnn.Adagrad(m, lr=0.01, clip=kw.pop("clip", 5.0))
    return m, fastrnn.Trainer(m, ids, optimizer=opt, **kw).fit(iterations)


@pytest.mark.parametrize("device", DEVICES)
def test_training_trajectory_matches_numpy(shakespeare, device):
    """300 gist-walk iterations, fused train steps vs the numpy reference (lr=0.01: see
    tests/test_parity.py for why the gist's 0.1 cannot be compared over 300 iterations)."""
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare)
    (m1, r1), (m2, r2) = [gist_run(b, d, ids, vocab, 300, seq_length=25)
                          for b, d in (("numpy", "cpu"), ("torch", device))]
    p1, p2 = m1.get_params(), m2.get_params()
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-8, k
    np.testing.assert_allclose(r1.losses, r2.losses, rtol=1e-8)
    assert r1.smooth_loss == pytest.approx(r2.smooth_loss, rel=1e-10)
    assert r2.losses[-20:].mean() < r2.losses[:20].mean()


@pytest.mark.parametrize("device", DEVICES)
def test_batched_trajectory_matches_numpy(shakespeare, device):
    text = shakespeare[:30000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    (m1, _), (m2, _) = [gist_run(b, d, ids, vocab, 100, hidden=24, seq_length=16, batch_size=8,
                                 clip=0.05) for b, d in (("numpy", "cpu"), ("torch", device))]
    p1, p2 = m1.get_params(), m2.get_params()
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-8, k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sampling_gives_the_numpy_ids(device, dtype):
    ref, fast = pair(11, 16, dtype, random_params(16, 11, np.random.default_rng(0)), device)
    a = ref.generate(300, seed=5, temperature=0.8, prime_ids=[3, 1, 4])
    b = fast.generate(300, seed=5, temperature=0.8, prime_ids=[3, 1, 4])
    assert b.dtype == np.int32 and b.shape == (300,)
    if dtype == "float64":
        np.testing.assert_array_equal(a, b)
    else:  # float32 rounding may flip a rare draw that sits on a CDF boundary, then they part
        np.testing.assert_array_equal(a[:50], b[:50])
    np.testing.assert_array_equal(ref.generate(80, greedy=True), fast.generate(80, greedy=True))
    np.testing.assert_array_equal(fast.generate(80, temperature=0), fast.generate(80, greedy=True))
    h0 = np.random.default_rng(1).normal(0, 0.5, 16)
    np.testing.assert_array_equal(ref.generate(40, h0=h0, seed=2), fast.generate(40, h0=h0, seed=2))
    assert fast.generate(0).shape == (0,)


def test_device_argument():
    m = fastrnn.CharRNN(5, 4, backend="torch", device="auto")
    assert m.device == ("cuda:0" if fastrnn.cuda_available() else "cpu")
    assert fastrnn.CharRNN(5, 4, backend="torch").device == "cpu"
    assert fastrnn.CharRNN(5, 4, backend="torch", device=torch.device("cpu")).device == "cpu"
    for bad in ["tpu", "cuda:x", "meta", "", 3]:
        with pytest.raises(ValueError, match="device must be"):
            fastrnn.CharRNN(5, 4, backend="torch", device=bad)
    if not fastrnn.cuda_available():
        for dev in ["cuda", "cuda:0"]:
            with pytest.raises(ValueError, match="CUDA is not usable"):
                fastrnn.CharRNN(5, 4, backend="torch", device=dev)
    with pytest.raises(ValueError, match="CPU only"):
        fastrnn.CharRNN(5, 4, backend="cython", device="cuda")


@needs_cuda
def test_cuda_index_out_of_range_and_placement():
    with pytest.raises(ValueError, match="visible"):
        fastrnn.CharRNN(5, 4, backend="torch", device=f"cuda:{torch.cuda.device_count()}")
    m = fastrnn.CharRNN(5, 4, backend="torch", device="cuda")
    assert m._backend.flat.is_cuda and m.device.startswith("cuda:")


def test_optimizer_and_state_must_fit_the_backend():
    m = fastrnn.CharRNN(5, 4, backend="torch")
    opt = fastrnn.Adagrad(m)
    opt.state["mem"] = np.zeros(opt.state["mem"].shape)  # e.g. state from a numpy model
    with pytest.raises(ValueError, match="state"):
        opt.step(m.get_params())

    class Other:
        name, lr, eps, clip, clip_norm, steps = "nesterov", 0.1, 1e-8, None, None, 0
        state_names, state = ("mem",), {"mem": m._backend.zeros()}
    with pytest.raises(ValueError, match="nesterov"):
        m._backend.update(Other(), m._backend.zeros())
    adam = fastrnn.Adam(m)
    adam.state["v"] = adam.state["v"].double()  # the wrong dtype (the model is float32)
    with pytest.raises(ValueError, match="'v'"):
        adam.step(m.get_params())
    assert adam.steps == 0


def test_trains_and_train_step_loss_is_the_chunk_loss():
    text = "the quick brown fox jumps over the lazy dog. " * 30
    vocab = fastrnn.Vocab.from_text(text)
    m = fastrnn.CharRNN(vocab, 32, backend="torch", dtype="float64", seed=1)
    trainer = fastrnn.Trainer(m, vocab.encode(text), seq_length=10, batch_size=4)
    h = trainer.h
    losses = []
    for _ in range(3):
        x, y = trainer.next_chunk()
        expected, _, h_next = m.loss_and_grads(x, y, h.copy())
        losses.append(m._backend.train_step(x, y, h, trainer.optimizer))
        assert losses[-1] == pytest.approx(expected, rel=1e-12)
        np.testing.assert_allclose(h, h_next, rtol=1e-12)
    r = trainer.fit(300)
    assert r.losses[-30:].mean() < 0.5 * r.losses[:30].mean()


def test_thread_setting_reaches_torch():
    before, blas = torch.get_num_threads(), fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        assert torch.get_num_threads() == 2
        fastrnn.set_num_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        fastrnn.set_num_threads(blas)
        torch.set_num_threads(before)
