"""Sampling: reproducible, identical across CPU backends, and drawn from the model's softmax."""
import math

import numpy as np
import pytest

import fastrnn
from conftest import CPU_BACKENDS, random_params


def models(H=16, V=11, dtype="float64", seed=0):
    params = random_params(H, V, np.random.default_rng(seed))
    out = []
    for b in CPU_BACKENDS:
        m = fastrnn.CharRNN(V, H, backend=b, dtype=dtype)
        m.set_params(params)
        out.append(m)
    return out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_seed_same_ids_on_every_backend(dtype):
    ref, fast = models(dtype=dtype)
    a = ref.generate(300, seed=5, temperature=0.8)
    b = fast.generate(300, seed=5, temperature=0.8)
    assert a.dtype == np.int32 and a.shape == (300,)
    if dtype == "float64":
        np.testing.assert_array_equal(a, b)
    else:  # float32 rounding may flip a rare draw that sits on a CDF boundary, then they part
        assert np.array_equal(a[:50], b[:50])
    np.testing.assert_array_equal(fast.generate(300, seed=5, temperature=0.8), b)
    assert not np.array_equal(fast.generate(300, seed=6), b)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_greedy_is_argmax_path_and_temperature_zero_is_greedy(backend):
    m = [x for x in models() if x.backend == backend][0]
    p = m.get_params()
    h = np.zeros(m.hidden_size)
    expected = []
    for _ in range(40):  # the argmax path, computed here from the equations
        idx = int(np.argmax(p["Why"] @ h + p["by"]))
        expected.append(idx)
        h = np.tanh(p["Wxh"][:, idx] + p["Whh"] @ h + p["bh"])
    np.testing.assert_array_equal(m.generate(40, greedy=True), expected)
    np.testing.assert_array_equal(m.generate(40, temperature=0), expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_prime_warms_the_state(backend):
    m = [x for x in models() if x.backend == backend][0]
    prime = np.array([1, 4, 2, 9, 9, 0])
    _, h = m.loss(prime, prime)  # forward over the prime gives the state sampling starts from
    np.testing.assert_array_equal(m.generate(50, prime_ids=prime, seed=1),
                                  m.generate(50, h0=h, seed=1))
    assert not np.array_equal(m.generate(50, prime_ids=prime, greedy=True),
                              m.generate(50, greedy=True))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_first_draw_follows_the_softmax(backend):
    """The first id of many independent draws follows softmax(by / temperature) (h0 = 0, Why·0)."""
    V, temperature, n = 5, 0.7, 4000
    m = fastrnn.CharRNN(V, 3, backend=backend, dtype="float64")
    by = np.array([0.0, 1.0, -1.0, 2.0, 0.5])
    m.set_params({**m.get_params(), "by": by})
    p = np.exp(by / temperature) / np.exp(by / temperature).sum()
    firsts = np.array([m.generate(1, seed=s, temperature=temperature)[0] for s in range(n)])
    freq = np.bincount(firsts, minlength=V) / n
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 5 * sigma), (freq, p)


def test_sample_text_uses_the_vocab():
    vocab = fastrnn.Vocab.from_text("hello world")
    m = fastrnn.CharRNN(vocab, 8, backend="cython")
    s = m.sample_text(100, prime="hello", seed=0)
    assert isinstance(s, str) and len(s) == 100 and set(s) <= set(vocab.chars)
    assert m.generate(0).shape == (0,)


# -- top-k, top-p and streaming ---------------------------------------------------------------

@pytest.mark.parametrize("top_k,top_p", [(3, None), (None, 0.6), (4, 0.8), (11, 1.0), (1, 0.3)])
def test_filtered_sampling_same_ids_on_every_backend(top_k, top_p):
    ref, fast = models()
    kw = dict(seed=9, temperature=1.3, top_k=top_k, top_p=top_p)
    a, b = ref.generate(400, **kw), fast.generate(400, **kw)
    np.testing.assert_array_equal(a, b)
    if top_k == 3:  # the draws really are restricted: at most 3 distinct next ids per context
        assert not np.array_equal(a, ref.generate(400, seed=9, temperature=1.3))


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (3, 1.0), (0, 0.5)])
def test_draws_at_the_ends_of_the_uniform_range_match_numpy(top_k, top_p):
    """Uniforms of 0 take the first id with mass, and the largest double below 1 the last one
    (ids filtered out have none): the inverse CDF at its edges, as numpy's searchsorted does."""
    V, H, n = 12, 20, 60
    rng = np.random.default_rng(2)
    ref, fast = models(H=H, V=V, seed=2)
    for u in (0.0, np.nextafter(1.0, 0.0)):
        uniforms = np.full(n, u)
        h0 = rng.normal(0, 0.5, H)
        got = [m._backend.generate(n, h0.copy(), uniforms, 0.7, False, top_k, top_p)
               for m in (ref, fast)]
        np.testing.assert_array_equal(got[0], got[1])
    # by hand, the first draw from h0 = 0: logits by
    p = ref.get_params()
    z = p["by"] - p["by"].max()
    first, last = (fast._backend.generate(1, np.zeros(H), np.full(1, u), 0.7, False, 0, 1.0)[0]
                   for u in (0.0, np.nextafter(1.0, 0.0)))
    assert first == 0 and last == V - 1 and np.all(np.exp(z / 0.7) > 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_top_k_1_and_tiny_top_p_are_greedy(backend):
    m = [x for x in models() if x.backend == backend][0]
    greedy = m.generate(60, greedy=True, prime_ids=[3, 1])
    np.testing.assert_array_equal(m.generate(60, top_k=1, seed=4, prime_ids=[3, 1]), greedy)
    np.testing.assert_array_equal(m.generate(60, top_p=1e-9, seed=4, prime_ids=[3, 1]), greedy)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("top_k,top_p", [(2, None), (None, 0.7), (3, 0.5)])
def test_first_draw_follows_the_filtered_softmax(backend, top_k, top_p):
    """From h0 = 0 the first draw's distribution is softmax(by / temperature) cut to the top
    ids as documented, then renormalised: computed here by hand and compared to frequencies."""
    V, temperature, n = 5, 0.9, 3000
    m = fastrnn.CharRNN(V, 3, backend=backend, dtype="float64")
    by = np.array([0.3, 1.0, -1.0, 1.6, 0.5])
    m.set_params({**m.get_params(), "by": by})
    p = np.exp(by / temperature) / np.exp(by / temperature).sum()
    order = np.argsort(-by)                       # ids by falling probability
    keep = order[:top_k or V]
    if top_p is not None:                         # the smallest prefix reaching top_p of it
        mass = np.cumsum(p[keep]) / p[keep].sum()
        keep = keep[:int(np.searchsorted(mass, top_p)) + 1]
    want = np.zeros(V)
    want[keep] = p[keep] / p[keep].sum()
    firsts = np.array([m.generate(1, seed=s, temperature=temperature, top_k=top_k,
                                  top_p=top_p)[0] for s in range(n)])
    freq = np.bincount(firsts, minlength=V) / n
    assert np.all(freq[want == 0] == 0)
    sigma = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(freq - want) <= 5 * sigma + 1e-12), (freq, want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_stream_yields_what_generate_returns(backend):
    vocab = fastrnn.Vocab.from_text("abcdefgh ")
    m = fastrnn.CharRNN(vocab, 10, backend=backend, dtype="float64", seed=1)
    m.set_params(random_params(10, len(vocab), np.random.default_rng(2)))
    kw = dict(seed=3, temperature=0.9, top_p=0.95)
    text = m.sample_text(70, prime="bad", **kw)
    assert "".join(m.stream(70, prime="bad", chunk_size=16, **kw)) == text
    assert "".join(m.stream(70, prime="bad", chunk_size=7, **kw)) == text
    import itertools
    endless = m.stream(None, prime="bad", **kw)
    assert "".join(itertools.islice(endless, 70)) == text
    assert list(fastrnn.CharRNN(4, 3, backend=backend).stream(5, greedy=True)) == \
        fastrnn.CharRNN(4, 3, backend=backend).generate(5, greedy=True).tolist()


def test_sampling_options_are_checked():
    m = fastrnn.CharRNN(6, 4, backend="cython")
    for kw, match in [(dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"),
                      (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p"),
                      (dict(top_p=float("nan")), "top_p")]:
        with pytest.raises(ValueError, match=match):
            m.generate(3, **kw)
        with pytest.raises(ValueError, match=match):
            m.stream(3, **kw)
    with pytest.raises(ValueError, match="chunk_size"):
        m.stream(3, chunk_size=0)
    with pytest.raises(ValueError, match="vocab"):
        m.stream(3, prime="ab")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_ties_rank_the_lower_id_first(backend):
    m = fastrnn.CharRNN(5, 3, backend=backend, dtype="float64")
    m.set_params({**m.get_params(), "by": np.array([0.0, 2.0, 2.0, 2.0, 1.0])})
    firsts = {int(m.generate(1, seed=s, top_k=2)[0]) for s in range(200)}
    assert firsts == {1, 2}  # ids 1, 2, 3 tie; the top 2 are the two lower ids
    assert m.generate(1, top_k=1, seed=0)[0] == m.generate(1, greedy=True)[0] == 1


SAMPLERS = [b for b in ("numpy", "cython", "torch") if b in fastrnn.available_backends()]


def overflowing(backend, rows, sign=1.0, V=6, H=4):
    """A float32 model whose logits, after the first id, are +-inf at `rows` (sign) and 0
    elsewhere: finite weights near the float32 maximum times a state of tanh(1) > 0.5 each,
    summed over H > 1 same-signed terms (which overflow in any order of summation)."""
    m = fastrnn.CharRNN(V, H, backend=backend, dtype="float32")
    p = {k: np.zeros_like(v) for k, v in m.get_params().items()}
    p["bh"][:] = 1.0  # every state after the first id: tanh(1)
    p["Why"][rows] = sign * 0.9 * np.finfo(np.float32).max
    m.set_params(p)
    return m


SAMPLING = [dict(greedy=True), dict(seed=1), dict(seed=2, temperature=0.7),
            dict(seed=3, top_k=2), dict(seed=4, top_p=0.5), dict(seed=5, top_k=3, top_p=0.9)]


@pytest.mark.parametrize("kw", SAMPLING, ids=lambda kw: "-".join(map(str, kw)))
def test_infinite_logits_give_the_same_ids_on_every_backend(kw):
    """Issue 17: where finite weights overflow float32 to an infinite logit, the cython sampler
    took id 0 and numpy/torch the last infinite one. Every backend now takes softmax's limit:
    mass 1 on each logit equal to the highest, 0 on the others; the draws follow from the
    uniforms (the first id comes from the zero state: all logits 0, all ids equally likely)."""
    n, V = 60, 6
    u = np.random.default_rng(kw.get("seed")).random(n)
    greedy = kw.get("greedy", False)
    # V equal logits (the first id; all -inf later): equally likely, the top_k lowest ids kept,
    # then the fewest of them whose count reaches top_p of theirs
    kept = math.ceil(kw.get("top_p", 1) * min(kw.get("top_k") or V, V))

    def among_equal(uk):
        return 0 if greedy else int(uk * kept)

    cases = {  # rows made infinite, sign -> the ids expected after the first
        "one": ([3], 1.0, lambda uk: 3),
        # two: the lower first in rank order (so top_p 0.5 keeps id 2 alone)
        "two": ([2, 4], 1.0, lambda uk: 2 if greedy or kw.get("top_p", 1) <= 0.5 or uk < 0.5
                else 4),
        "all -inf": (list(range(V)), -1.0, among_equal),
    }
    for case, (rows, sign, want) in cases.items():
        got = {b: overflowing(b, rows, sign).generate(n, **kw) for b in SAMPLERS}
        expected = [among_equal(u[0])] + [want(uk) for uk in u[1:]]
        for b, ids in got.items():
            assert ids.tolist() == expected, (case, b, kw)
    assert len({tuple(x) for x in got.values()}) == 1


@pytest.mark.parametrize("backend", SAMPLERS)
def test_nan_logits_raise_a_clear_error(backend):
    """Logits holding a NaN (weights that overflow into inf - inf) have no distribution: every
    backend's sampler refuses them, naming the id, rather than returning some id. (A model's
    state starts finite, so the backends are handed a NaN state here.)"""
    m = fastrnn.CharRNN(5, 3, backend=backend, dtype="float32", seed=0)
    for greedy in (True, False):
        h = np.full(3, np.nan, dtype=np.float32)
        with pytest.raises(FloatingPointError, match="logits hold NaN at generated id 0"):
            m._backend.generate(4, h, np.full(4, 0.5), 1.0, greedy, 2, 0.9)


def overflowing_stack(backend, cell, rows, V=6, H=4):
    """A float32 stacked model whose top layer's state is constant and positive after the first
    id (biases only) and whose head overflows to +inf at `rows`."""
    m = fastrnn.CharRNN(V, H, cell=cell, num_layers=2, backend=backend, dtype="float32")
    p = {k: np.zeros_like(v) for k, v in m.get_params().items()}
    for k in range(2):
        p[f"bias_ih_l{k}"][:] = 3.0  # every gate open: h > 0.5 whatever the cell
    if cell == "gru":
        p["bias_ih_l1"][H:2 * H] = -3.0  # z ~ 0: h ~ n = tanh(3)
    p["Why"][rows] = 0.9 * np.finfo(np.float32).max
    m.set_params(p)
    return m


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_stacked_models_sample_infinite_logits_alike(cell):
    """The rule of infinite logits (softmax's limit) holds for the stacked models' samplers
    too, compiled and numpy/torch alike; a NaN state raises the same error everywhere."""
    n = 40
    for kw in SAMPLING:
        got = {b: overflowing_stack(b, cell, [1, 4]).generate(n, **kw).tolist()
               for b in SAMPLERS}
        assert len({tuple(x) for x in got.values()}) == 1, (kw, got)
        assert set(got["numpy"][1:]) <= {1, 4}, kw
    for b in SAMPLERS:
        m = overflowing_stack(b, cell, [1])
        state = tuple(np.full((2, 4), np.nan, np.float32) for _ in range(m.spec.state_count))
        with pytest.raises(FloatingPointError, match="logits hold NaN at generated id 0"):
            m._backend.generate(3, state if cell == "lstm" else state[0:1], np.full(3, 0.5),
                                1.0, False, 0, 1.0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_stream_by_default_grows_its_chunks(backend):
    """stream() without chunk_size asks the sampler for 16 ids, then twice as many each time up
    to 1024 (each sampler call lays the weights out anew: at H=512, 16-id chunks made stream
    3-5x slower than generate), and still yields exactly what generate() returns."""
    m = fastrnn.CharRNN(7, 5, backend=backend, dtype="float64", seed=0)
    m.set_params(random_params(5, 7, np.random.default_rng(3)))
    sizes = []
    real = m._backend.generate

    def spy(n, *args):
        sizes.append(n)
        return real(n, *args)

    m._backend.generate = spy
    n = 16 + 32 + 64 + 128 + 256 + 512 + 1024 + 1024 + 100
    kw = dict(seed=4, temperature=0.9, top_k=5)
    assert list(m.stream(n, **kw)) == m.generate(n, **kw).tolist()
    assert sizes == [16, 32, 64, 128, 256, 512, 1024, 1024, 100, n]
    sizes.clear()
    assert len(list(m.stream(20_000, greedy=True))) == 20_000 and len(sizes) < 30


def test_the_sampler_keeps_its_scratch():
    m = fastrnn.CharRNN(7, 5, backend="cython", seed=0)
    m.generate(3, seed=0)
    work = m._backend._sample_work
    list(m.stream(100, seed=0))
    assert m._backend._sample_work is work


def test_a_large_stacked_model_generates_on_the_thread_team_with_the_same_ids():
    """Generation splits a character's products over fastrnn's threads once a character reads
    SAMPLE_TEAM_BYTES of weights (a 2-layer LSTM of 160 reads 1.2 MB), with the ids of one
    thread; a small model stays on one thread."""
    from fastrnn.backends import cython_backend as cb
    before = fastrnn.get_num_threads()
    big = fastrnn.CharRNN(30, 160, cell="lstm", num_layers=2, backend="cython",
                          dtype="float32", seed=3)
    small = fastrnn.CharRNN(30, 32, cell="gru", num_layers=2, backend="cython", seed=3)
    try:
        runs = []
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            assert cb.sample_threads(big.spec, 4) == threads
            assert cb.sample_threads(small.spec, 8) == 1
            runs.append(big.generate(400, seed=9, temperature=0.9))
    finally:
        fastrnn.set_num_threads(before)
    np.testing.assert_array_equal(runs[0], runs[1])
