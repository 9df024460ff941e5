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


# -- every optimizer, sampling filters, optimizer checkpoints and resume: against numpy ---------

OPTIMIZERS = ["sgd", "adagrad", "rmsprop", "adam"]
CLIPPING = [(None, None, 1.0), (0.5, None, 1.0), (None, 2.0, 1.0), (1.0, 3.0, 0.25),
            (None, 1e9, 0.5)]  # the last: a clip_norm that never bites


def make_opt(name, model, **kw):
    if name == "sgd":
        kw.pop("eps", None)
    return fastrnn.make_optimizer(name, model, **kw)


def assert_same_state(ref_opt, opt, tol):
    a, b = ref_opt.state_dict(), opt.state_dict()
    assert set(a) == set(b) == set(opt.state_names) | {"steps"} and a["steps"] == b["steps"]
    for name in opt.state_names:
        assert b[name].dtype == a[name].dtype and rel_err(a[name], b[name]) <= tol, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("clip,clip_norm,grad_scale", CLIPPING)
def test_every_optimizer_step_matches_numpy(device, dtype, name, clip, clip_norm, grad_scale):
    rng = np.random.default_rng(7)
    H, V = 6, 5
    ref, fast = pair(V, H, dtype, random_params(H, V, rng), device)
    grads_seq = [{k: rng.normal(0, 2, v.shape) for k, v in ref.get_params().items()}
                 for _ in range(4)]
    kw = dict(lr=0.03, clip=clip, clip_norm=clip_norm)
    ref_opt, opt = make_opt(name, ref, **kw), make_opt(name, fast, **kw)
    before = fast.get_params()
    for g in grads_seq:
        ref_opt.step(g, grad_scale=grad_scale)
        opt.step(g, grad_scale=grad_scale)
    assert opt.steps == ref_opt.steps == 4
    want, got = ref.get_params(), fast.get_params()
    for k in want:
        assert rel_err(got[k], want[k]) <= TOL[dtype], k
        assert not np.allclose(got[k], before[k])  # it moved
    assert_same_state(ref_opt, opt, TOL[dtype])
    for buf in opt.state.values():
        assert isinstance(buf, torch.Tensor) and buf.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("clip,clip_norm,grad_scale", [(0.3, 4.0, 1.0), (None, 0.05, 1 / 21),
                                                       (None, None, 1 / 21)])
def test_fused_train_step_matches_numpy(device, dtype, name, clip, clip_norm, grad_scale):
    """Loss, carried state, parameters and optimizer state after 3 fused iterations (B=3, T=7)
    equal the numpy backend's."""
    rng = np.random.default_rng(11)
    H, V, B, T = 10, 9, 3, 7
    ref, fast = pair(V, H, dtype, random_params(H, V, rng), device)
    kw = dict(lr=0.01, clip=clip, clip_norm=clip_norm)
    ref_opt, opt = make_opt(name, ref, **kw), make_opt(name, fast, **kw)
    h_ref, h = np.zeros((2, B, H), dtype=dtype)
    tol = TOL[dtype]
    for _ in range(3):
        x, y = (rng.integers(0, V, (B, T)).astype(np.int32) for _ in range(2))
        loss_ref = ref._backend.train_step(x, y, h_ref, ref_opt, grad_scale)
        loss = fast._backend.train_step(x, y, h, opt, grad_scale)
        assert isinstance(loss, float) and loss == pytest.approx(loss_ref, rel=tol)
        assert rel_err(h, h_ref) <= tol
    assert opt.steps == ref_opt.steps == 3
    want, got = ref.get_params(), fast.get_params()
    for k in want:
        assert rel_err(got[k], want[k]) <= tol, k
    assert_same_state(ref_opt, opt, tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,lr", [("sgd", 0.001), ("adagrad", 0.01), ("rmsprop", 2e-4),
                                     ("adam", 2e-4)])
def test_every_optimizer_trajectory_matches_numpy(shakespeare, device, name, lr):
    """60 trainer iterations (B=8, mean loss, both clips) per backend from one init."""
    text = shakespeare[:20000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    results = []
    for backend, dev in (("numpy", "cpu"), ("torch", device)):
        m = fastrnn.CharRNN(vocab, 24, backend=backend, dtype="float64", seed=2, device=dev)
        opt = make_opt(name, m, lr=lr, clip=5.0, clip_norm=0.5)
        r = fastrnn.Trainer(m, ids, seq_length=12, batch_size=8, optimizer=opt,
                            reduction="mean").fit(60)
        results.append((m.get_params(), r.losses, opt))
    (p1, l1, o1), (p2, l2, o2) = results
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-10, k
    np.testing.assert_allclose(l1, l2, rtol=1e-10)
    assert_same_state(o1, o2, 1e-10)
    assert l1[-10:].mean() < l1[:10].mean()


def test_clip_norm_needs_no_extra_synchronisation(monkeypatch):
    """The global norm is applied through a device-side factor: a training iteration with
    clip_norm reads nothing back but the loss and state (Tensor.item / __bool__ / tolist)."""
    m = fastrnn.CharRNN(7, 8, backend="torch", dtype="float64")
    opt = fastrnn.Adam(m, clip_norm=1e-3)
    x = np.arange(12, dtype=np.int32).reshape(2, 6) % 7
    h = np.zeros((2, 8))
    m._backend.train_step(x, x, h, opt, 0.5)  # buffers allocated

    def forbidden(*args, **kwargs):
        raise AssertionError("a host synchronisation inside the update")
    for attr in ("item", "__bool__", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, attr, forbidden)
    m._backend.train_step(x, x, h, opt, 0.5)
    monkeypatch.undo()
    assert opt.steps == 2


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.6), (4, 0.8), (11, 1.0), (1, 0.3),
                                         (20, 0.9), (None, 1e-9)])
def test_filtered_sampling_gives_the_numpy_ids(device, dtype, top_k, top_p):
    ref, fast = pair(11, 16, dtype, random_params(16, 11, np.random.default_rng(0)), device)
    kw = dict(seed=9, temperature=1.3, top_k=top_k, top_p=top_p, prime_ids=[3, 1, 4])
    a, b = ref.generate(300, **kw), fast.generate(300, **kw)
    if dtype == "float64":
        np.testing.assert_array_equal(a, b)
    else:  # see test_sampling_gives_the_numpy_ids
        np.testing.assert_array_equal(a[:50], b[:50])
    streamed = np.array(list(fast.stream(300, chunk_size=7, **kw)))
    np.testing.assert_array_equal(streamed, b)
    if top_k == 3:  # the draws really are restricted
        assert not np.array_equal(a, ref.generate(300, seed=9, temperature=1.3,
                                                  prime_ids=[3, 1, 4]))


@pytest.mark.parametrize("device", DEVICES)
def test_ties_rank_the_lower_id_first(device):
    m = fastrnn.CharRNN(5, 3, backend="torch", dtype="float64", device=device)
    m.set_params({**m.get_params(), "by": np.array([0.0, 2.0, 2.0, 2.0, 1.0])})
    firsts = {int(m.generate(1, seed=s, top_k=2)[0]) for s in range(200)}
    assert firsts == {1, 2}  # ids 1, 2, 3 tie; the top 2 are the two lower ids
    assert m.generate(1, top_k=1, seed=0)[0] == m.generate(1, greedy=True)[0] == 1
    ref = fastrnn.CharRNN(5, 3, backend="numpy", dtype="float64")
    ref.set_params(m.get_params())
    for kw in (dict(top_k=2), dict(top_p=0.5), dict(top_k=3, top_p=0.7)):
        np.testing.assert_array_equal(m.generate(200, seed=1, **kw),
                                      ref.generate(200, seed=1, **kw))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_state_dict_moves_between_backends(device, name):
    """state_dict() gives numpy arrays; load_state_dict() fills device tensors, from a torch or
    a numpy optimizer; both continue alike."""
    rng = np.random.default_rng(3)
    H, V = 5, 4
    params = random_params(H, V, rng)
    grads = [{k: rng.normal(0, 1, v.shape) for k, v in params.items()} for _ in range(4)]
    src, _ = pair(V, H, "float64", params, device)[::-1]
    src_opt = make_opt(name, src, clip_norm=1.0)
    for g in grads[:2]:
        src_opt.step(g)
    state, params2 = src_opt.state_dict(), src.get_params()
    assert all(isinstance(state[k], np.ndarray) for k in src_opt.state_names)
    assert state["steps"] == 2
    for g in grads[2:]:
        src_opt.step(g)
    for backend in ("torch", "numpy"):
        m = fastrnn.CharRNN(V, H, backend=backend, dtype="float64",
                            device=device if backend == "torch" else "cpu")
        m.set_params(params2)
        opt = make_opt(name, m, clip_norm=1.0)
        opt.load_state_dict(state)
        assert opt.steps == 2
        for k in opt.state_names:
            np.testing.assert_array_equal(m._backend.to_numpy(opt.state[k]), state[k])
        if backend == "torch":
            assert all(opt.state[k].device.type == device for k in opt.state_names)
        for g in grads[2:]:
            opt.step(g)
        for k, v in src.get_params().items():
            assert rel_err(m.get_params()[k], v) <= 1e-12, (backend, k)
        assert_same_state(src_opt, opt, 1e-12)
    torch_opt = make_opt(name, fastrnn.CharRNN(V, H, backend="torch", device=device))
    if torch_opt.state_names:
        with pytest.raises(ValueError, match="shape"):
            torch_opt.load_state_dict({**state, torch_opt.state_names[0]: np.zeros(3)})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,B", [("adagrad", 1), ("adam", 3), ("rmsprop", 2)])
def test_resume_on_torch_continues_exactly(tmp_path, shakespeare, device, name, B):
    """N+M iterations in one go equal N, a training checkpoint, Trainer.load on the torch
    backend, M more (within float64 rounding; on the CPU bit for bit)."""
    text = shakespeare[:8000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    N, M = 12, 9

    def make():
        m = fastrnn.CharRNN(vocab, 16, backend="torch", dtype="float64", seed=4, device=device)
        return fastrnn.Trainer(m, ids, seq_length=10, batch_size=B,
                               optimizer=make_opt(name, m, lr=0.01, clip_norm=2.0),
                               reduction="mean" if B > 1 else "sum")

    one_go = make()
    one_go.fit(N + M)
    first = make()
    first.fit(N, checkpoint_dir=tmp_path)
    resumed = fastrnn.Trainer.load(tmp_path / "latest.npz", ids, backend="torch", device=device)
    assert resumed.model.backend == "torch" and resumed.optimizer.steps == N
    assert isinstance(resumed.optimizer.state[resumed.optimizer.state_names[0]], torch.Tensor)
    resumed.fit(M)
    assert resumed.iteration == one_go.iteration == N + M
    assert resumed.optimizer.steps == one_go.optimizer.steps == N + M
    exact = device == "cpu"
    for k, v in one_go.model.get_params().items():
        got = resumed.model.get_params()[k]
        assert np.array_equal(got, v) if exact else rel_err(got, v) <= 1e-12, k
    assert rel_err(resumed.h, one_go.h) <= (0 if exact else 1e-12)
    assert_same_state(one_go.optimizer, resumed.optimizer, 0 if exact else 1e-12)
    assert resumed.smooth_loss == pytest.approx(one_go.smooth_loss, rel=1e-12)


def test_cli_trains_resumes_and_samples_on_torch(tmp_path):
    """`fastrnn train/sample --backend torch --device cpu` work, checkpoints included."""
    import subprocess
    import sys

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    (tmp_path / "data.txt").write_text("to be or not to be, that is the question. " * 40)
    common = ["--backend", "torch", "--device", "cpu", "--print-every", "10",
              "--sample-length", "0", "--threads", "1"]
    out = cli("train", "--data", "data.txt", "--hidden-size", "16", "--seq-length", "8",
              "--batch-size", "3", "--iterations", "20", "--checkpoint-every", "10", *common)
    assert "backend='torch'" in out and "20 iterations" in out
    out = cli("train", "--resume", "checkpoints/latest.npz", "--iterations", "30", *common)
    assert "resuming checkpoints/latest.npz at iteration 20" in out and "30 iterations" in out
    sampled = cli("sample", "checkpoints/latest.npz", "--length", "40", "--seed", "3",
                  "--top-k", "5", "--backend", "torch", "--device", "cpu")
    ref = cli("sample", "checkpoints/latest.npz", "--length", "40", "--seed", "3",
              "--top-k", "5", "--backend", "numpy")
    assert sampled == ref and len(sampled) >= 40
