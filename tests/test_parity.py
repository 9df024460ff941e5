"""The compiled backend against the numpy reference: same numbers, same training trajectory."""
import numpy as np
import pytest

import fastrnn
from conftest import random_params, rel_err

TOL = {"float64": 1e-10, "float32": 1e-4}
# (64, 16, 64, 10) runs the step-by-step backward of large batches (see _by_step)
# (1, 5, 256, 20) and (1, 4, 300, 7): one sequence with H >= 256 takes dot products on Whh
# (the second with a partial last vector); (2, 3, 5, 3) and (1, 6, 3, 2): so small that no row of
# Whh or Why may be read past its end
SHAPES = [(1, 1, 1, 1), (1, 25, 100, 77), (4, 10, 32, 20), (16, 7, 64, 65), (3, 40, 17, 128),
          (64, 16, 64, 10), (1, 5, 256, 20), (1, 4, 300, 7), (2, 3, 5, 3), (1, 6, 3, 2),
          # one sequence whose recurrence is split, H % 16 units by dot products (1 and 8 of
          # them), and two that are not (9 of them; H below 48)
          (1, 9, 49, 5), (1, 7, 56, 30), (1, 12, 57, 9), (1, 8, 40, 6)]


def pair(V, H, dtype, params):
    models = [fastrnn.CharRNN(V, H, backend=b, dtype=dtype) for b in ("numpy", "cython")]
    for m in models:
        m.set_params(params)
    return models


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B,T,H,V", SHAPES)
def test_loss_grads_state_match_numpy(dtype, B, T, H, V):
    rng = np.random.default_rng(B * 1000 + T + H + V)
    ref, fast = pair(V, H, dtype, random_params(H, V, rng))
    shape = (T,) if B == 1 else (B, T)
    x, y = rng.integers(0, V, shape), rng.integers(0, V, shape)
    h0 = rng.normal(0, 0.5, (H,) if B == 1 else (B, H))
    l1, g1, h1 = ref.loss_and_grads(x, y, h0, return_dh0=True)
    l2, g2, h2 = fast.loss_and_grads(x, y, h0, return_dh0=True)
    tol = TOL[dtype]
    assert abs(l1 - l2) <= tol * abs(l1)
    assert h1.shape == h2.shape == np.shape(h0)
    assert rel_err(h1, h2) <= tol
    for k in g1:
        assert g1[k].dtype == g2[k].dtype == np.dtype(dtype)
        assert rel_err(g1[k], g2[k]) <= tol, k
    # forward-only path gives the same loss and state
    l3, h3 = fast.loss(x, y, h0)
    assert abs(l3 - l2) <= tol * abs(l2) and rel_err(h3, h2) <= tol


def on_threads(threads, fn):
    """fn() with fastrnn's thread count set to `threads`, then set back."""
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(threads)
        return fn()
    finally:
        fastrnn.set_num_threads(before)


def assert_threaded_matches_numpy(dtype, ref, fast, x, y, h0, threads):
    """The cython backend on `threads` threads against numpy: loss (also forward only), state,
    dL/dh0 and gradients; returns the states of loss_and_grads and of the forward pass."""
    l1, g1, h1 = ref.loss_and_grads(x, y, h0, return_dh0=True)
    (l2, g2, h2), (l3, h3) = on_threads(threads, lambda: (
        fast.loss_and_grads(x, y, h0, return_dh0=True), fast.loss(x, y, h0)))
    tol = TOL[dtype]
    assert abs(l1 - l2) <= tol * abs(l1) and abs(l3 - l2) <= tol * abs(l2)
    assert rel_err(h1, h2) <= tol and rel_err(h3, h2) <= tol
    for k in g1:
        assert rel_err(g1[k], g2[k]) <= tol, k
    return h2, h3


@pytest.mark.filterwarnings("ignore:threads=3 is more than")
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B,T,H,V", [(16, 50, 64, 20), (7, 300, 48, 30), (5, 800, 33, 9),
                                     (2, 300, 40, 30)])
def test_batch_split_over_threads_matches_numpy(threads, dtype, B, T, H, V):
    """A batch split over threads (parts of consecutive rows, own gradients, summed after)."""
    from fastrnn.backends.cython_backend import _kernels as CK
    assert CK.chunk_parts(B, T, H, V, threads) == min(threads, B)  # the split is tested
    rng = np.random.default_rng(B + T + H + V + threads)
    ref, fast = pair(V, H, dtype, random_params(H, V, rng))
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    assert_threaded_matches_numpy(dtype, ref, fast, x, y, rng.normal(0, 0.5, (B, H)), threads)


@pytest.mark.filterwarnings("ignore:threads=3 is more than")
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("T,H,V", [(5, 512, 20), (30, 512, 65), (4, 600, 7), (3, 800, 129)])
def test_one_sequence_split_over_threads_matches_numpy(threads, dtype, T, H, V):
    """One sequence (B=1) with H >= 512: its hidden units split into slices whose threads take
    every step together (each on its rows of Whh, forward and BPTT); 600 and 800 leave a partial
    vector in a slice; the state matches the one-thread path exactly (the same sums)."""
    from fastrnn.backends.cython_backend import _kernels as CK
    assert CK.chunk_parts(1, T, H, V, threads) == min(threads, H // 256) > 1  # split tested
    assert CK.chunk_parts(1, T, H, V, 1) == 1
    rng = np.random.default_rng(T + H + V + threads)
    ref, fast = pair(V, H, dtype, random_params(H, V, rng))
    x, y, h0 = rng.integers(0, V, T), rng.integers(0, V, T), rng.normal(0, 0.5, H)
    h2, h3 = assert_threaded_matches_numpy(dtype, ref, fast, x, y, h0, threads)
    h_one = on_threads(1, lambda: fast.loss_and_grads(x, y, h0)[2])
    assert np.array_equal(h2, h_one) and np.array_equal(h3, h_one)


def split_update_case(dtype, B, T, H, V, opt, clip_norm, seed):
    """Buffers for one kernel train_step: params, optimizer state and a chunk."""
    from fastrnn.backends.cython_backend import _kernels as CK
    rng = np.random.default_rng(seed)
    n = CK.num_params(H, V)
    P = rng.normal(0, 0.3, n).astype(dtype)
    M = rng.random(n).astype(dtype) * (opt != "sgd")
    S = rng.random(n).astype(dtype) if opt == "adam" else None
    x, y = (rng.integers(0, V, (B, T)).astype(np.int32) for _ in range(2))
    h = rng.normal(0, 0.5, (B, H)).astype(dtype)
    kw = dict(optimizer=CK.OPTIMIZERS[opt], lr=0.05, eps=1e-8, clip=5.0, mem2=S, step=3,
              clip_norm=clip_norm, grad_scale=0.5)
    return CK, P, M, S, x, y, h, kw


@pytest.mark.filterwarnings("ignore:threads=3 is more than")
@pytest.mark.parametrize("guarded", [False, True])
@pytest.mark.parametrize("opt", ["adagrad", "sgd", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("B,T,H,V,threads", [(1, 6, 512, 40, 2), (1, 3, 800, 9, 3),
                                             (16, 50, 64, 20, 2)])
def test_update_split_over_threads_matches_the_one_pass_update(guarded, opt, dtype, B, T, H, V,
                                                               threads):
    """train_step on a split chunk updates on the chunk's threads, each its own ranges of the
    parameters (one sequence: those whose gradients its slice computed, in the chunk's own
    team): the same as the gradients of the same
    split followed by the one-pass optimizer_update, exactly without clip_norm (the same
    operations on each element), and to rounding with it (the norm is summed by range)."""
    for clip_norm in (None, 0.5):
        CK, P, M, S, x, y, h, kw = split_update_case(dtype, B, T, H, V, opt, clip_norm, 7)
        assert CK.chunk_parts(B, T, H, V, threads) == threads
        work = np.empty(CK.work_size(B, T, H, V, threads), dtype=dtype)
        P1, M1, S1, h1 = P.copy(), M.copy(), None if S is None else S.copy(), h.copy()
        G = np.empty_like(P)
        loss1 = CK.loss_and_grads(P1, G, x, y, h1, work, H, V, threads=threads)
        norm = CK.optimizer_update(P1, G, M1, S1, kw["optimizer"], kw["lr"], kw["eps"],
                                   kw["clip"], 0.9, 0.999, kw["step"], clip_norm,
                                   kw["grad_scale"])
        assert (norm > 0) == (clip_norm is not None)
        undo = np.empty(CK.undo_size(P.size, kw["optimizer"]), dtype=dtype) if guarded else None
        out = CK.train_step(P, np.empty_like(P), M, x, y, h, work, H, V, undo=undo,
                            threads=threads, **kw)
        loss2, taken = out if guarded else (out, True)
        assert taken and loss2 == loss1 and np.array_equal(h, h1)
        tol = 0 if clip_norm is None else 2e-6 if dtype == "float32" else 1e-14
        for got, want in [(P, P1), (M, M1), (S, S1)]:
            if want is not None:
                assert np.abs(got - want).max() <= tol * np.abs(want).max()
        assert not np.array_equal(P, split_update_case(dtype, B, T, H, V, opt, None, 7)[1])


@pytest.mark.parametrize("opt,where", [("adagrad", "first"), ("adagrad", "last"),
                                       ("adagrad", "Why"), ("adagrad", "bh"), ("sgd", "first")])
@pytest.mark.parametrize("B,T,H,threads", [(1, 4, 512, 2), (16, 50, 64, 2)])
def test_a_split_guarded_update_undoes_every_range(opt, where, B, T, H, threads):
    """A non-finite value in one thread's range of the update undoes the step in all of them
    (SGD, which keeps no state and needs no undo scratch, too: a NaN in the column of Wxh of
    an id the chunk never reads leaves the loss finite). One sequence's first slice owns rows of
    Wxh, Whh and Why (its share), its last the last units of bh and by."""
    V = 20
    CK, P, M, S, x, y, h, kw = split_update_case("float32", B, T, H, V, opt, None, 3)
    if opt == "sgd":
        x[x == 0] = 1
        P[0] = np.nan  # Wxh[0, 0]
    else:
        M[{"first": 0, "last": -1, "Why": H * V + H * H, "bh": 2 * H * V + H * H + H - 1}[where]] \
            = np.nan
    before = P.copy(), M.copy(), h.copy()
    undo = np.empty(CK.undo_size(P.size, kw["optimizer"]), dtype=P.dtype)
    work = np.empty(CK.work_size(B, T, H, V, threads), dtype=P.dtype)
    assert CK.chunk_parts(B, T, H, V, threads) == threads
    loss, taken = CK.train_step(P, np.empty_like(P), M, x, y, h, work, H, V, undo=undo,
                                threads=threads, **kw)
    assert np.isfinite(loss) and not taken
    for got, want in zip((P, M, h), before):
        assert np.array_equal(got, want, equal_nan=True)


def test_batched_trajectory_on_two_threads_matches_numpy(shakespeare):
    """60 Adam steps with B=8 streams split over two threads, against numpy."""
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare[:200_000])
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        models = []
        for backend in ("numpy", "cython"):
            m = fastrnn.CharRNN(vocab, 48, backend=backend, dtype="float64", seed=4)
            t = fastrnn.Trainer(m, ids, seq_length=40, batch_size=8,
                                optimizer=fastrnn.Adam(m, lr=2e-3, clip_norm=5.0))
            t.fit(60)
            models.append(m)
        from fastrnn.backends.cython_backend import _kernels as CK
        assert CK.chunk_parts(8, 40, 48, len(vocab), 2) == 2
    finally:
        fastrnn.set_num_threads(before)
    p1, p2 = (m.get_params() for m in models)
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-10, k


def test_zero_state_default_and_repeated_ids():
    """h0=None means zeros; an id repeated in a chunk accumulates into one Wxh column."""
    rng = np.random.default_rng(0)
    H, V = 8, 3
    ref, fast = pair(V, H, "float64", random_params(H, V, rng))
    x = np.array([[2, 2, 2, 2, 0], [2, 1, 2, 2, 2]])
    y = np.array([[2, 2, 1, 2, 0], [0, 1, 2, 2, 2]])
    for m in (ref, fast):
        a = m.loss_and_grads(x, y)
        b = m.loss_and_grads(x, y, np.zeros((2, H)))
        assert a[0] == b[0]
    g1, g2 = ref.loss_and_grads(x, y)[1], fast.loss_and_grads(x, y)[1]
    assert rel_err(g1["Wxh"], g2["Wxh"]) <= 1e-12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("clip", [5.0, 0.01, None])
def test_adagrad_step_matches_formula(dtype, clip):
    rng = np.random.default_rng(1)
    H, V = 9, 7
    params = random_params(H, V, rng)
    grads = {k: rng.normal(0, 3, v.shape) for k, v in params.items()}
    ref, fast = pair(V, H, dtype, params)
    mem = {k: np.zeros_like(v) for k, v in params.items()}
    expected = {k: v.astype(dtype) for k, v in params.items()}
    opts = [fastrnn.Adagrad(m, lr=0.05, clip=clip) for m in (ref, fast)]
    for _ in range(3):
        for k in expected:  # the gist's update, written out
            g = grads[k].astype(dtype)
            if clip is not None:
                g = np.clip(g, -clip, clip)
            mem[k] += g * g
            expected[k] -= 0.05 * g / np.sqrt(mem[k] + 1e-8)
        for o in opts:
            o.step(grads)
    for m in (ref, fast):
        got = m.get_params()
        for k in expected:
            assert rel_err(got[k], expected[k]) <= TOL[dtype], (m.backend, k)
    assert all(np.array_equal(grads[k], grads[k]) for k in grads)  # caller's grads untouched


@pytest.mark.parametrize("clip", [5.0, 0.05])
def test_training_trajectory_matches_numpy(shakespeare, clip):
    """300 gist-walk iterations (fused compiled step vs numpy reference) from the same init.

    lr is 0.01 here, not the gist's 0.1: from the 0.01 init, Adagrad's per-element step
    lr / sqrt(mem + eps) is ~1000x the gradient for elements whose summed g*g is still near eps,
    so at lr=0.1 any difference in summation order (1e-16) grows ~10x per iteration and two
    correct implementations part by 1e-5 within 20 iterations (measured; see the next test). At
    lr=0.01 the walk is stable and the two backends agree to ~1e-14 after 300 iterations.
    """
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare)
    models = [fastrnn.CharRNN(vocab, 100, backend=b, dtype="float64", seed=0)
              for b in ("numpy", "cython")]
    results = [fastrnn.Trainer(m, ids, seq_length=25,
                               optimizer=fastrnn.Adagrad(m, lr=0.01, clip=clip)).fit(300)
               for m in models]
    p1, p2 = models[0].get_params(), models[1].get_params()
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-8, k
    np.testing.assert_allclose(results[0].losses, results[1].losses, rtol=1e-8)
    assert results[0].smooth_loss == pytest.approx(results[1].smooth_loss, rel=1e-10)
    assert results[0].losses[-20:].mean() < results[0].losses[:20].mean()  # it trained


def test_gist_settings_agree_before_chaos_sets_in(shakespeare):
    """At the gist's lr=0.1 the first iterations agree closely too."""
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare)
    models = [fastrnn.CharRNN(vocab, 100, backend=b, dtype="float64", seed=0)
              for b in ("numpy", "cython")]
    for m in models:
        fastrnn.Trainer(m, ids).fit(4)
    p1, p2 = models[0].get_params(), models[1].get_params()
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-8, k


def test_batched_trajectory_matches_numpy(shakespeare):
    text = shakespeare[:30000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    models = [fastrnn.CharRNN(vocab, 24, backend=b, dtype="float64", seed=3)
              for b in ("numpy", "cython")]
    for m in models:
        fastrnn.Trainer(m, ids, seq_length=16, batch_size=8,
                        optimizer=fastrnn.Adagrad(m, lr=0.01)).fit(100)
    p1, p2 = models[0].get_params(), models[1].get_params()
    for k in p1:
        assert rel_err(p1[k], p2[k]) <= 1e-8, k


def _variant(isa):
    """The kernels on one instruction-set variant (see setup.py), or a skip where this CPU or
    build lacks it."""
    from fastrnn.backends.cython_backend import load_kernels
    try:
        K = load_kernels(isa)
    except ImportError as exc:
        pytest.skip(f"{isa} kernels not usable here: {exc}")
    assert K.BUILD_ISA in (isa, "native")
    return K


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_instruction_set_variant_matches_numpy(isa, dtype):
    """Each compiled variant (see setup.py) this CPU can run gives the reference's numbers."""
    K = _variant(isa)
    rng = np.random.default_rng(5)
    for B, T, H, V in [(1, 25, 100, 77), (5, 9, 37, 20)]:
        ref = fastrnn.CharRNN(V, H, backend="numpy", dtype=dtype)
        ref.set_params(random_params(H, V, rng))
        x, y = rng.integers(0, V, (B, T)).astype(np.int32), rng.integers(0, V, (B, T)).astype(np.int32)
        h0 = rng.normal(0, 0.5, (B, H)).astype(dtype)
        loss, grads, h = ref.loss_and_grads(x, y, h0)
        flat = ref._backend.flat
        g = np.zeros_like(flat)
        h2 = h0.copy()
        work = np.empty(K.work_size(B, T, H, V), dtype=dtype)
        loss2 = K.loss_and_grads(flat, g, x, y, h2, work, H, V)
        tol = TOL[dtype]
        assert abs(loss - loss2) <= tol * abs(loss) and rel_err(h, h2) <= tol
        assert rel_err(ref._backend.to_flat(grads), g) <= tol
        out1 = ref.generate(200, seed=3, temperature=0.9, h0=h0[0])
        out2 = np.empty(200, np.int32)
        h3 = h0[0].copy()
        K.sample(flat, h3, np.random.default_rng(3).random(200), 0.9, False, out2,
                 np.empty(K.sample_work_size(H, V), dtype=dtype), H, V)
        n = 200 if dtype == "float64" else 30
        np.testing.assert_array_equal(out1[:n], out2[:n])


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_instruction_set_variant_runs_stacked_models_as_numpy(isa, dtype):
    """The stacked models' products on each variant's own tile shape (6 x 4 vectors with
    AVX-512, 6 x 2 narrower ones otherwise) and row split (13 rows: 6 + 4 + 3; a part of 32:
    6 x 4 + 4 + 4; 8: 4 + 4), with columns that end mid-vector, against the numpy reference.
    The last model's input projections and dX have more rows (9 x 130) than one block of
    _mm_panels holds, so they go in blocks with a short last one."""
    from fastrnn._layout import ModelSpec
    from fastrnn.backends.cython_backend import CELL_CODES
    K = _variant(isa)
    rng = np.random.default_rng(8)
    for cell, L, B, T, H, V, threads in [("lstm", 2, 13, 6, 37, 11, 1),
                                         ("gru", 2, 64, 3, 40, 19, 2), ("rnn", 2, 8, 5, 70, 9, 1),
                                         ("gru", 2, 9, 130, 128, 13, 1)]:
        ref = fastrnn.CharRNN(V, H, cell=cell, num_layers=L, backend="numpy", dtype=dtype,
                              seed=int(rng.integers(100)))
        x = rng.integers(0, V, (B, T)).astype(np.int32)
        y = rng.integers(0, V, (B, T)).astype(np.int32)
        h0 = rng.normal(0, 0.5, (L, B, H)).astype(dtype)
        c0 = rng.normal(0, 0.5, (L, B, H)).astype(dtype) if cell == "lstm" else None
        loss, grads, _ = ref.loss_and_grads(x, y, (h0, c0) if cell == "lstm" else h0)
        spec = ModelSpec(cell, V, H, L)
        g = np.full(spec.num_params, np.nan, dtype=dtype)
        work = np.empty(K.stack_work_size(B, T, H, V, L, CELL_CODES[cell], threads), dtype=dtype)
        loss2 = K.stack_loss_and_grads(ref._backend.flat, g, spec.offsets(), CELL_CODES[cell], 0,
                                       H, V, L, x, y, h0.copy(),
                                       None if c0 is None else c0.copy(), None, None, None,
                                       work, threads)
        tol = TOL[dtype]
        assert abs(loss - loss2) <= tol * abs(loss), (cell, isa)
        assert rel_err(ref._backend.to_flat(grads), g) <= tol, (cell, isa)


@pytest.mark.parametrize("B,T,H,V,threads", [(1, 1500, 512, 5, 2), (1, 1500, 512, 5, 1),
                                             (8, 400, 128, 7, 2), (1, 25, 100, 77, 1)])
def test_gradients_do_not_depend_on_what_the_buffer_held(B, T, H, V, threads):
    """The weight gradients are set, not summed into a cleared buffer (_mm_set): a gradient
    buffer full of NaN still gets numpy's gradients, with BPTT in several blocks (the first
    three cases: the chunk's B*T*H states pass the memory budget of _block_steps), one sequence
    split over threads, and a batch split over threads."""
    from fastrnn.backends.cython_backend import _kernels as CK
    rng = np.random.default_rng(12)
    ref = fastrnn.CharRNN(V, H, backend="numpy", dtype="float64")
    ref.set_params(random_params(H, V, rng))
    x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    h0 = rng.normal(0, 0.5, (B, H))
    loss, grads, _ = ref.loss_and_grads(x, y, h0)
    flat = ref._backend.flat
    g = np.full_like(flat, np.nan)
    work = np.full(CK.work_size(B, T, H, V, threads), np.nan)
    loss2 = CK.loss_and_grads(flat, g, x.astype(np.intc), y.astype(np.intc), h0.copy(), work, H,
                              V, threads=threads)
    assert abs(loss - loss2) <= 1e-12 * loss
    assert rel_err(ref._backend.to_flat(grads), g) <= 1e-12
