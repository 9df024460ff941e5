"""A character n-gram language model with interpolated Kneser-Ney smoothing: the baseline any
RNN must beat.

For an n-gram order k, let a_k(h w) be the count of the k-gram h w in the training ids at the
highest order (k = N), and its continuation count (the number of distinct ids that precede h w)
below it. With A_k(h) = sum_w a_k(h w) and R_k(h) = #{w : a_k(h w) > 0},

    P_k(w | h) = (max(a_k(h w) - D_k, 0) + D_k R_k(h) P_{k-1}(w | h')) / A_k(h)   if A_k(h) > 0
               = P_{k-1}(w | h')                                                  otherwise

where h' drops the oldest id of h, P_0(w) = 1 / V (so ids never seen in training keep some
mass) and D_k = n1 / (n1 + 2 n2) from the numbers n1, n2 of k-grams whose a_k is 1 and 2
(Chen & Goodman, 1998). Each P_k(. | h) sums to 1 over the vocabulary.
"""
import math

import numpy as np

from .model import as_ids, check_positive_int

MAX_ORDER = 62  # V**order < 2**62 for any vocabulary of 2 or more


def _codes(ids, k, V):
    """The k-grams of ids as integers (base V), one per start position."""
    n = len(ids) - k + 1
    code = np.zeros(max(n, 0), dtype=np.int64)
    for j in range(k):
        code = code * V + ids[j:j + n]
    return code


def _lookup(keys, values, queries):
    """values[i] where keys[i] == query (keys sorted), else 0."""
    if len(keys) == 0:
        return np.zeros(len(queries), dtype=values.dtype)
    i = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[i] == queries, values[i], 0)


class KneserNey:
    """Interpolated Kneser-Ney character n-gram model of order N over ids 0..V-1."""

    def __init__(self, order=5, vocab_size=None):
        self.order = check_positive_int(order, "order")
        if self.order > MAX_ORDER:  # checked before V**order is ever computed
            raise ValueError(f"order {self.order} is too high: an n-gram order is at most "
                             f"{MAX_ORDER} (V**order must stay below 2**62 for V >= 2)")
        self.V = None if vocab_size is None else check_positive_int(vocab_size, "vocab_size")

    def fit(self, ids):
        ids = np.asarray(ids)
        if self.V is None:
            self.V = int(ids.max()) + 1 if ids.size else 1
        ids = as_ids(ids, self.V, "ids", ndims=(1,)).astype(np.int64)
        N, V = self.order, self.V
        if N * math.log2(max(V, 1)) >= 62 or V ** N >= 2 ** 62:  # the first test is cheap
            raise ValueError(f"order {N} is too high for a vocabulary of {V} "
                             f"(V**order must stay below 2**62)")
        self.tables = []   # per order k = 1..N: (sorted k-gram codes, a_k, context table, D_k)
        grams = np.unique(_codes(ids, N, V), return_counts=True)
        levels = [None] * N
        levels[N - 1] = grams
        for k in range(N - 1, 0, -1):  # continuation counts: distinct predecessors of each k-gram
            levels[k - 1] = np.unique(levels[k][0] % V ** k, return_counts=True)
        for k in range(1, N + 1):
            codes, a = levels[k - 1]
            ctx, inverse = np.unique(codes // V, return_inverse=True)
            A = np.bincount(inverse, weights=a).astype(np.int64)
            R = np.bincount(inverse).astype(np.int64)
            n1, n2 = int(np.sum(a == 1)), int(np.sum(a == 2))
            D = n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5
            self.tables.append((codes, a.astype(np.int64), ctx, A, R, min(max(D, 1e-3), 1.0)))
        return self

    def probs(self, history, targets):
        """P(targets[i] | history[i]) for arrays of histories (n, N-1) (-1 where shorter than
        N-1 ids, padded on the left) and target ids (n,)."""
        V, N = self.V, self.order
        history = np.asarray(history, dtype=np.int64).reshape(len(targets), N - 1)
        targets = np.asarray(targets, dtype=np.int64)
        p = np.full(len(targets), 1.0 / V)
        ctx = np.zeros(len(targets), dtype=np.int64)
        alive = np.ones(len(targets), dtype=bool)  # the history reaches back k-1 ids
        for k in range(1, N + 1):
            codes, a, ctx_keys, A, R, D = self.tables[k - 1]
            if k > 1:
                prev = history[:, N - k]           # the id k-1 places back (-1: none)
                alive &= prev >= 0
                ctx = ctx + np.maximum(prev, 0) * V ** (k - 2)
            a_hw = _lookup(codes, a, ctx * V + targets)
            A_h = _lookup(ctx_keys, A, ctx)
            R_h = _lookup(ctx_keys, R, ctx)
            seen = alive & (A_h > 0)
            p = np.where(seen, (np.maximum(a_hw - D, 0) + D * R_h * p) / np.maximum(A_h, 1), p)
        return p

    def nll(self, ids):
        """(total nats, predictions) of ids, each after the first predicted from up to N-1
        ids before it (within `ids`)."""
        ids = as_ids(ids, self.V, "ids", ndims=(1,)).astype(np.int64)
        n, N = len(ids), self.order
        if n < 2:
            raise ValueError("scoring needs at least 2 ids (one prediction)")
        padded = np.concatenate([np.full(N - 1, -1, dtype=np.int64), ids])
        hist = np.stack([padded[j:j + n - 1] for j in range(1, N)], axis=1) if N > 1 \
            else np.zeros((n - 1, 0), dtype=np.int64)
        p = self.probs(hist, ids[1:])
        return float(-np.log(p).sum()), n - 1
