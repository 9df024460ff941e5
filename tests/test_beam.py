"""Beam search: a beam of 1 is greedy, wider beams find sequences at least as likely, the same ids
on every backend, clear errors, and `fastrnn sample --beam`."""
import subprocess
import sys

import numpy as np
import pytest

import fastrnn

BACKENDS = ["numpy", "cython", "torch"]
KINDS = [dict(), dict(num_layers=2, nonlinearity="relu"), dict(cell="lstm", num_layers=2),
         dict(cell="gru", num_layers=3), dict(cell="lstm"), dict(cell="gru")]
IDS = ["minchar", "rnn2-relu", "lstm2", "gru3", "lstm1", "gru1"]
PRIME = [1, 3, 2]


def model(kind, backend="numpy", dtype="float64", seed=0, V=9, H=12):
    """A model with weights of trained scale (peaked distributions, where beams matter)."""
    ref = fastrnn.CharRNN(V, H, backend="numpy", init="uniform", seed=seed, **kind)
    rng = np.random.default_rng(seed + 100)
    scale = 1.5 if kind.get("nonlinearity") == "relu" else 3  # (relu: unbounded, saturates)
    params = {k: v * scale + rng.normal(0, 0.1, v.shape) for k, v in ref.get_params().items()}
    m = fastrnn.CharRNN(V, H, backend=backend, dtype=dtype, **kind)
    m.set_params(params)
    return m


def logprob(m, ids):
    """log p(ids | prime) computed independently of the search: model.loss over the ids."""
    _, h = m.loss(PRIME[:-1], PRIME[1:])
    return -m.loss(np.r_[PRIME[-1], ids[:-1]], ids, h0=h)[0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_beam_of_one_is_greedy(kind, backend):
    for dtype in ("float64", "float32"):
        m = model(kind, backend, dtype)
        greedy = m.generate(80, greedy=True, prime_ids=PRIME)
        np.testing.assert_array_equal(m.generate(80, beam=1, prime_ids=PRIME), greedy)
        ids, score = m.beam_search(80, 1, prime_ids=PRIME)
        np.testing.assert_array_equal(ids, greedy)
        assert score == pytest.approx(logprob(m, ids) / 80, rel=1e-4)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_wider_beams_are_at_least_as_likely_as_greedy(kind):
    better = 0
    for seed in range(4):
        m = model(kind, seed=seed)
        greedy = logprob(m, m.generate(40, greedy=True, prime_ids=PRIME))
        for K in (2, 4, 16):
            ids, score = m.beam_search(40, K, prime_ids=PRIME)
            assert ids.dtype == np.int32 and ids.shape == (40,)
            lp = logprob(m, ids)
            assert lp >= greedy - 1e-9, (seed, K)
            assert score == pytest.approx(lp / 40, rel=1e-9)  # the reported score is this one
            better += lp > greedy + 1e-6
    assert better > 0  # the searches are not all the greedy path


def test_a_plain_beam_can_fall_below_greedy_which_is_then_returned():
    # (seed 5, K=2 of the minchar model: the beam drops the greedy prefix and ends 1.5 nats
    # lower; the backend's plain search shows it, the model returns the greedy path)
    m = model(dict(), seed=5)
    h = m._one(m._primed_state(PRIME, None))
    plain, _ = m._backend.beam_search(40, h, 2)
    greedy = m.generate(40, greedy=True, prime_ids=PRIME)
    assert logprob(m, plain) < logprob(m, greedy) - 1
    np.testing.assert_array_equal(m.beam_search(40, 2, prime_ids=PRIME)[0], greedy)


def test_beam_is_exhaustive_when_it_holds_every_prefix():
    # V**n hypotheses fit in the beam: it must find the most likely sequence of all
    m = model(dict(cell="gru", num_layers=2), V=4)
    n = 4
    grid = np.stack(np.meshgrid(*[np.arange(4)] * n, indexing="ij"), -1).reshape(-1, n)
    best = max(grid, key=lambda s: logprob(m, s))
    ids, _ = m.beam_search(n, 4 ** n, prime_ids=PRIME)
    np.testing.assert_array_equal(ids, best)


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_same_ids_on_every_backend(kind):
    for K in (3, 8):
        ref = model(kind).beam_search(60, K, prime_ids=PRIME)
        for backend in BACKENDS[1:]:
            ids, score = model(kind, backend).beam_search(60, K, prime_ids=PRIME)
            np.testing.assert_array_equal(ids, ref[0])
            assert score == pytest.approx(ref[1], rel=1e-9)


def test_state_h0_and_zero_length():
    m = model(dict(cell="lstm", num_layers=2))
    h0 = tuple(np.full((2, 12), 0.3) for _ in range(2))
    a = m.beam_search(30, 4, h0=h0)[0]
    assert not np.array_equal(a, m.beam_search(30, 4)[0])
    ids, score = m.beam_search(0, 4)
    assert ids.shape == (0,) and score == 0.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_bad_beam_width(bad):
    m = model(dict())
    with pytest.raises((ValueError, TypeError), match="beam must be a positive integer"):
        m.beam_search(5, bad)
    if bad is not None:
        with pytest.raises(ValueError, match="beam must be a positive integer"):
            m.generate(5, beam=bad)


def test_beam_refuses_sampling_options():
    m = model(dict())
    for kw in (dict(greedy=True), dict(temperature=0.5), dict(top_k=3), dict(top_p=0.9)):
        with pytest.raises(ValueError, match="beam search"):
            m.generate(5, beam=2, **kw)


def test_cli_sample_beam(tmp_path):
    vocab = fastrnn.Vocab("abcdefghi")
    m = model(dict(cell="gru", num_layers=2))
    m.vocab = vocab
    m.save(tmp_path / "m.npz")

    def run(*args):
        # from tmp_path: run from the checkout, `-m fastrnn` would import its uncompiled sources
        return subprocess.run([sys.executable, "-m", "fastrnn", "sample", str(tmp_path / "m.npz"),
                               *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    out = run("--beam", "5", "--length", "50", "--prime", "beca")
    assert out.returncode == 0, out.stderr
    ids, score = m.beam_search(50, 5, prime_ids=vocab.encode("beca"))
    assert out.stdout == "beca" + vocab.decode(ids)
    assert f"{score:.4f}" in out.stderr
    for args in (["--beam", "0"], ["--beam", "-2"], ["--beam", "2", "--temperature", "0.5"]):
        bad = run(*args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_cython_beam_is_the_compiled_kernel_and_checks_its_arguments():
    from fastrnn.backends import cython_backend
    from fastrnn.backends.numpy_backend import NumpyBackend
    kernels = cython_backend._kernels
    assert cython_backend.CythonBackend.beam_search is not NumpyBackend.beam_search
    m = model(dict(cell="lstm", num_layers=2), "cython", "float32")
    be = m._backend
    h = np.zeros((2, 12), np.float32)
    ids, score = kernels.beam_search(be.flat, *be._stack, h, h.copy(), 20, 3)
    np.testing.assert_array_equal(ids, model(dict(cell="lstm", num_layers=2)).beam_search(
        20, 3)[0])
    bad = [((np.zeros((1, 12), np.float32), h), "h has shape"),
           ((h, None), "needs its cell state"),
           ((h, h.copy(), 20, 0), "beam must be"),
           ((h, h.copy(), 20, 2**30), "candidates per step"),
           ((h, h.copy(), -1, 3), "n must be")]
    for args, message in bad:
        full = args + (20, 3)[len(args) - 2:]
        with pytest.raises(ValueError, match=message):
            kernels.beam_search(be.flat, *be._stack, *full)
    with pytest.raises(ValueError, match="offsets"):
        kernels.beam_search(be.flat, be._stack[0][::-1].copy(), *be._stack[1:], h, h.copy(),
                            5, 2)
    with pytest.raises(ValueError, match="legacy"):
        kernels.beam_search(be.flat, *be._stack, h, h.copy(), 5, 2, legacy=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [dict(), dict(cell="lstm", num_layers=2)],
                         ids=["minchar", "lstm2"])
def test_nan_logits_raise_as_generate_does(backend, kind):
    # (a model's state starts finite, so the backend is handed a NaN state, as test_generate's
    # sampler test does)
    m = model(kind, backend, "float32")
    h = np.full(12, np.nan, np.float32) if not kind else \
        tuple(np.full((2, 12), np.nan, np.float32) for _ in range(2))
    with pytest.raises(FloatingPointError, match="logits hold NaN at generated id 0"):
        m._backend.beam_search(10, h, 3)
