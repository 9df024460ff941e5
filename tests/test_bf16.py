"""precision="bf16": the rounding helper, the numpy reference against hand computation and
against float32, the torch backend's autocast, validation, checkpoints, generation, and the
compiled kernels (those tests skip until the kernels have the bf16 mode)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import numpy_backend
from fastrnn.backends.numpy_backend import bf16

U = 2.0 ** -8      # bfloat16's unit roundoff: 8 significand bits, round to nearest
EPS32 = 2.0 ** -24  # float32's
MODELS = [dict(cell="rnn"), dict(cell="rnn", num_layers=2), dict(cell="rnn", num_layers=2,
          nonlinearity="relu"), dict(cell="lstm"), dict(cell="lstm", num_layers=2),
          dict(cell="gru"), dict(cell="gru", num_layers=2), dict()]  # last: min-char-rnn's
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
                                 num_layers=model.num_layers, backend="numpy", dtype="float64")
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
