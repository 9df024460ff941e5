"""The Kneser-Ney baseline against a direct, dictionary-based reading of its definition."""
import math
from collections import Counter, defaultdict

import numpy as np
import pytest

import fastrnn
from fastrnn.ngram import KneserNey


def reference_kn(train, order, V):
    """P(w | h) by the recursive definition in fastrnn/ngram.py's docstring, with plain dicts."""
    grams = Counter(tuple(train[i:i + order]) for i in range(len(train) - order + 1))
    counts = {order: grams}
    for k in range(order - 1, 0, -1):  # continuation counts: distinct predecessors
        counts[k] = Counter(g[1:] for g in counts[k + 1])
    disc, ctx_total, ctx_types = {}, {}, {}
    for k, c in counts.items():
        n1 = sum(1 for v in c.values() if v == 1)
        n2 = sum(1 for v in c.values() if v == 2)
        disc[k] = min(max(n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5, 1e-3), 1.0)
        tot, types = defaultdict(int), defaultdict(int)
        for g, v in c.items():
            tot[g[:-1]] += v
            types[g[:-1]] += 1
        ctx_total[k], ctx_types[k] = tot, types

    def prob(history, w):
        p = 1.0 / V
        for k in range(1, order + 1):
            if len(history) < k - 1:
                break
            h = tuple(history[len(history) - (k - 1):]) if k > 1 else ()
            A = ctx_total[k].get(h, 0)
            if A > 0:
                a = counts[k].get(h + (w,), 0)
                p = (max(a - disc[k], 0) + disc[k] * ctx_types[k][h] * p) / A
        return p
    return prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_the_definition(order):
    rng = np.random.default_rng(order)
    V = 6
    train = list(rng.integers(0, 5, 400))  # id 5 never occurs in training
    test = list(rng.integers(0, 6, 60))
    ref = reference_kn(train, order, V)
    lm = KneserNey(order, V).fit(train)
    total, n = lm.nll(test)
    want = -sum(math.log(ref(test[max(0, i - order + 1):i], test[i]))
                for i in range(1, len(test)))
    assert n == 59 and total == pytest.approx(want, rel=1e-12)


def test_every_context_is_a_distribution():
    text = "abracadabra, a cadaver! " * 20
    vocab = fastrnn.Vocab.from_text(text + "z")  # 'z' is never seen in training
    lm = KneserNey(4, len(vocab)).fit(vocab.encode(text))
    V = len(vocab)
    for history in ["abr", "zzz", "dab", "!  ", "xa"[1:] + "ca"]:
        h = np.tile(vocab.encode(history)[-3:], (V, 1))
        p = lm.probs(h, np.arange(V))
        assert p.sum() == pytest.approx(1.0, abs=1e-12) and np.all(p > 0)
    short = np.full((V, 3), -1)  # no history at all: the unigram level
    assert lm.probs(short, np.arange(V)).sum() == pytest.approx(1.0, abs=1e-12)


def test_it_learns_shakespeare(shakespeare):
    vocab = fastrnn.Vocab.from_text(shakespeare)
    ids = vocab.encode(shakespeare)
    split = int(len(ids) * 0.95)
    nats = {n: KneserNey(n, len(vocab)).fit(ids[:split]).nll(ids[split:]) for n in (1, 5)}
    unigram, five = (t / c for t, c in nats.values())
    assert unigram == pytest.approx(3.295, abs=0.01)  # the unigram entropy of the corpus
    assert five < 1.65  # measured 1.585 nats/char (2.287 bits/char)


def test_bad_orders():
    with pytest.raises(ValueError, match="order"):
        KneserNey(0)
    with pytest.raises(ValueError, match="too high"):
        KneserNey(12, 200).fit([0, 1, 2])


def test_absurd_orders_are_refused_at_once(tmp_path):
    """Issue 17: `fastrnn baseline d.txt --order 1000000000` hung computing V**order before
    its range check."""
    import time
    from test_cli import cli
    for order, V in ((10**9, None), (63, None), (40, 4), (10**18, 2)):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="too high"):
            KneserNey(order, V).fit([0, 1, 2, 3])
        assert time.perf_counter() - t0 < 5  # a hang, not a speed: V**order never ends
    assert KneserNey(30, 4).fit([0, 1, 2, 3] * 10).order == 30  # 4**30 = 2**60 fits
    (tmp_path / "d.txt").write_text("abcd" * 100)
    err = cli("baseline", "d.txt", "--order", "1000000000", cwd=tmp_path, ok=False)
    assert "too high" in err.stderr_text
