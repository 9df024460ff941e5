"""The compiled bf16 mode (src/fastrnn/_bf16.pxi): its products against float64 with the error
bfloat16 rounding allows, the float32 accumulation, the rounding rule, the float32 fallback,
min-char-rnn's model on the stack kernels, and its errors."""
import numpy as np
import pytest

from fastrnn._layout import ModelSpec
from fastrnn.backends.cython_backend import CELL_CODES, load_kernels

K = load_kernels()
U_BF16 = 2.0 ** -8    # unit roundoff of bfloat16 (8 significant bits)
U_F32 = 2.0 ** -24


@pytest.fixture(autouse=True)
def emulated_path():
    K.set_bf16_path("emulated")
    yield
    K.set_bf16_path("emulated")


def bf16_round(a):
    """Round to nearest, ties to even, on the float32 bits (finite values)."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("M,K_,N", [(1, 1, 1), (7, 33, 5), (40, 300, 70), (3, 2048, 17)])
def test_products_within_the_bound_bf16_rounding_allows(M, K_, N):
    rng = np.random.default_rng(M + K_)
    A = (rng.standard_normal((M, K_)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
    B = rng.standard_normal((K_, N)).astype(np.float32)
    C = K.bf16_matmul(A, B).astype(np.float64)
    exact = A.astype(np.float64) @ B.astype(np.float64)
    mag = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
    # each operand within U_BF16 of itself: a product within 2u + u^2; the float32 sum of K
    # exact products within (K-1) u32 of the sum of magnitudes
    bound = mag * (2 * U_BF16 + U_BF16 ** 2) * (1 + K_ * U_F32) + mag * K_ * U_F32
    assert np.all(np.abs(C - exact) <= bound)
    # and the operands really are rounded: the same products of the rounded operands agree to
    # float32 summation error only
    ra, rb = bf16_round(A).astype(np.float64), bf16_round(B).astype(np.float64)
    assert np.all(np.abs(C - ra @ rb) <= (np.abs(ra) @ np.abs(rb)) * K_ * U_F32)
    if K_ > 30:  # not float32 products: those land far closer
        assert np.abs(C - exact).max() > 10 * np.abs((A @ B).astype(np.float64) - exact).max()


def test_products_accumulate_in_float32():
    # 4096 ones: a bfloat16 accumulator stalls at 256 (256 + 1 rounds back to 256)
    ones = np.ones((1, 4096), np.float32)
    assert K.bf16_matmul(ones, ones.T)[0, 0] == 4096.0
    # terms below bfloat16's resolution of the running sum still count
    a = np.full((1, 513), 1.0, np.float32)
    b = np.full((513, 1), 1.0, np.float32)
    b[0, 0] = 512.0
    assert K.bf16_matmul(a, b)[0, 0] == 1024.0


@pytest.mark.parametrize("x,want", [
    (1 + 2 ** -8, 1.0),                      # a tie: to the even neighbour (1.0)
    (1 + 3 * 2 ** -8, 1 + 2 ** -6),          # a tie: to the even neighbour above
    (1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7),   # past the tie: up
    (-(1 + 2 ** -8 + 2 ** -20), -(1 + 2 ** -7)),
    (2 - 2 ** -20, 2.0),                     # up into the next binade
    (np.finfo(np.float32).max, np.inf),      # past the largest bfloat16: infinity
    (np.inf, np.inf),
    (1e-40, 1e-40 - 1e-40 % 2 ** -133),      # a subnormal keeps its top bits
])
def test_operands_round_to_nearest_even(x, want):
    got = K.bf16_matmul(np.array([[x]], np.float32), np.array([[1.0]], np.float32))[0, 0]
    assert got == np.float32(want)


def test_nan_operands_stay_nan():
    got = K.bf16_matmul(np.array([[np.nan, 1.0]], np.float32), np.ones((2, 1), np.float32))
    assert np.isnan(got[0, 0])


def chunk(spec, bf16, seed=1, B=4, T=7, threads=2, dtype=np.float32):
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(spec.num_params) * 0.3).astype(dtype)
    g = np.zeros_like(p)
    X = rng.integers(0, spec.vocab_size, (B, T))
    Y = rng.integers(0, spec.vocab_size, (B, T))
    L, H, V = spec.num_layers, spec.hidden_size, spec.vocab_size
    h = (rng.standard_normal((L, B, H)) * 0.1).astype(dtype)
    c = h.copy() if spec.cell == "lstm" else None
    cell, relu = CELL_CODES[spec.cell], int(spec.nonlinearity == "relu")
    work = np.zeros(K.stack_work_size(B, T, H, V, L, cell, threads, bf16), dtype)
    loss = K.stack_loss_and_grads(p, g, spec.offsets(), cell, relu, H, V, L, X, Y, h, c, None,
                                  None, None, work, threads=threads, bf16=bf16)
    return loss, g, dict(p=p, X=X, Y=Y, h=h)


SPECS = [ModelSpec("lstm", 11, 20, 2), ModelSpec("gru", 11, 19, 2),
         ModelSpec("rnn", 11, 24, 3, "relu"), ModelSpec("rnn", 11, 20, 1)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_bf16_chunk_is_near_float32_and_not_equal(spec):
    if spec.legacy:
        K.set_bf16_path("fp32")
        l0, g0, _ = chunk(spec, True)
        K.set_bf16_path("emulated")
    else:
        l0, g0, _ = chunk(spec, False)
    l1, g1, _ = chunk(spec, True)
    # ~2^-8 relative per operand, averaged over many products: the loss moves far less
    assert abs(l1 - l0) <= 2e-3 * abs(l0)
    assert np.abs(g1 - g0).max() <= 0.05 * np.abs(g0).max()
    assert l1 != l0 and not np.array_equal(g1, g0)


@pytest.mark.parametrize("spec", SPECS[:3], ids=lambda s: s.describe())
def test_the_fp32_fallback_is_the_float32_kernels_exactly(spec):
    l0, g0, _ = chunk(spec, False)
    K.set_bf16_path("fp32")
    assert K.bf16_path() == "fp32"
    l1, g1, _ = chunk(spec, True)
    assert l1 == l0 and np.array_equal(g1, g0)


def test_min_char_rnn_model_on_the_stack_kernels_matches_its_own():
    spec = ModelSpec("rnn", 11, 20, 1)
    K.set_bf16_path("fp32")
    loss, g, a = chunk(spec, True, threads=1)
    g0 = np.zeros_like(g)
    work = np.zeros(K.work_size(4, 7, 20, 11, 1), np.float32)
    h = a["h"][0].copy()
    # chunk() left h at the last state: redraw the first from the same seed
    rng = np.random.default_rng(1)
    rng.standard_normal(spec.num_params), rng.integers(0, 11, (4, 7)), rng.integers(0, 11, (4, 7))
    h = (rng.standard_normal((1, 4, 20)) * 0.1).astype(np.float32)[0]
    l0 = K.loss_and_grads(a["p"], g0, a["X"].astype(np.int32), a["Y"].astype(np.int32), h, work,
                          20, 11, None, threads=1)
    assert abs(loss - l0) <= 1e-6 * abs(l0)
    assert np.abs(g - g0).max() <= 1e-5 * np.abs(g0).max()


def test_threads_do_not_change_bf16_results_beyond_float32_sums():
    spec = ModelSpec("lstm", 11, 20, 2)
    l1, g1, _ = chunk(spec, True, B=6, threads=1)
    l2, g2, _ = chunk(spec, True, B=6, threads=2)
    assert abs(l1 - l2) <= 1e-6 * abs(l1)
    assert np.abs(g1 - g2).max() <= 1e-5 * np.abs(g1).max()


def test_errors():
    spec = ModelSpec("lstm", 11, 20, 2)
    with pytest.raises(ValueError, match="float32"):
        chunk(spec, True, dtype=np.float64)
    with pytest.raises(ValueError, match="min-char-rnn"):
        chunk(ModelSpec("rnn", 11, 20, 1), False)
    for bad in ("amx", "avx512bf16", "fast"):
        with pytest.raises(ValueError, match="bf16 path"):
            K.set_bf16_path(bad)
    with pytest.raises(ValueError, match="2-D float32"):
        K.bf16_matmul(np.ones((2, 2)), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="cannot multiply"):
        K.bf16_matmul(np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))
    assert set(K.bf16_cpu()) == {"avx512_bf16", "amx_bf16", "amx_os"}


@pytest.mark.skipif(K.BUILD_DEBUG, reason="training-length: the checked build runs unoptimised "
                    "kernels, and the shorter tests above cover its memory safety")
@pytest.mark.parametrize("cell,layers,hidden", [("rnn", 1, 64), ("lstm", 2, 48)])
def test_2000_iterations_in_bf16_validate_within_002_of_float32(cell, layers, hidden):
    """Issue 16's quality check at test size: the lab preset's optimizer and schedule-free
    settings on smaller shapes (bench/bf16.py --quality runs the full presets)."""
    import fastrnn
    text = fastrnn.load_shakespeare()[:200_000]
    vocab = fastrnn.Vocab.from_text(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * 0.9)
    got = {}
    for precision in ("fp32", "bf16"):
        model = fastrnn.CharRNN(vocab, hidden, cell=cell, num_layers=layers, seed=0,
                                init="uniform", precision=precision)
        opt = fastrnn.make_optimizer("adam", model, lr=6e-3, betas=(0.9, 0.99), clip_norm=5.0,
                                     clip=None)
        tr = fastrnn.Trainer(model, ids[:cut], seq_length=32, batch_size=16, optimizer=opt,
                             reduction="mean", val_ids=ids[cut:], seed=0)
        for _ in range(2000):
            tr.step()
        got[precision] = tr.evaluate()["nats_per_char"]
    assert got["fp32"] < 2.0  # a model that learned (unigram: about 3.3)
    assert abs(got["bf16"] - got["fp32"]) <= 0.02, got
