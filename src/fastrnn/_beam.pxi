# Beam search (included by _kernels.pyx): the numpy backend's beam_search (see its docstring and
# beam_select) in compiled code, for every model. K hypotheses are rows of a batch of states,
# (K, L, H) each of h and c, in two copies: the kept rows are gathered from one into the other,
# then each steps in place on its new id by the arithmetic of _stack_generate's step (so a beam
# of 1 is the stacked sampler's greedy path). Candidates are scored in double: the hypothesis's
# summed log-probability plus log softmax(z)[v]; the K best are kept, best first, equal scores
# ranked by hypothesis, then id (the lower first), as every backend does.


cdef inline bint _beam_worse(const double* cand, int a, int b) noexcept nogil:
    # whether candidate a ranks after candidate b (lower score, or equal and a later index)
    return cand[a] < cand[b] or (cand[a] == cand[b] and a > b)


cdef void _beam_sift(const double* cand, int* heap, int i, int size) noexcept nogil:
    # heap of candidate indices, the worst at the root
    cdef int j, top
    while True:
        j = 2 * i + 1
        if j >= size:
            return
        if j + 1 < size and _beam_worse(cand, heap[j + 1], heap[j]):
            j += 1
        if not _beam_worse(cand, heap[j], heap[i]):
            return
        top = heap[i]
        heap[i] = heap[j]
        heap[j] = top
        i = j


cdef int _beam_best(const double* cand, int count, int K, int* heap) noexcept nogil:
    # the min(K, count) best candidates' indices into heap[0:kept], best first; returns kept
    cdef int size = 0, i, top
    for i in range(count):
        if size < K:
            heap[size] = i
            size += 1
            if size == K:
                for top in range(K // 2 - 1, -1, -1):
                    _beam_sift(cand, heap, top, K)
        elif _beam_worse(cand, heap[0], i):
            heap[0] = i
            _beam_sift(cand, heap, 0, K)
    if size < K:
        for top in range(size // 2 - 1, -1, -1):
            _beam_sift(cand, heap, top, size)
    i = size
    while i > 1:  # heap sort: the worst goes to the end each time, so best first
        i -= 1
        top = heap[0]
        heap[0] = heap[i]
        heap[i] = top
        _beam_sift(cand, heap, 0, i)
    return size


cdef void _beam_step(const StackModel* m, const floating* P, int idx, floating* h, floating* c,
                     floating* gx, floating* gh, floating* ghn) noexcept nogil:
    # one hypothesis's state h, c (L, H) steps on id idx: _stack_generate's step, with layer 0's
    # input read from W_ih's column (its bias sum as _stack_generate adds it); no b_hh (-1 in
    # the table, min-char-rnn's model) is a zero one
    cdef Py_ssize_t H = m.H, V = m.V, GH = m.G * H, i
    cdef const int64_t* off = m.off
    cdef const floating* w0 = P + off[0]
    cdef const floating* b_ih
    cdef const floating* b_hh
    cdef const floating* x = NULL
    cdef floating* hk
    cdef int layer
    for layer in range(m.L):
        hk = h + layer * H
        b_ih = P + off[4 * layer + 2]
        b_hh = P + off[4 * layer + 3] if off[4 * layer + 3] >= 0 else NULL
        if layer == 0:
            for i in range(GH):
                gx[i] = w0[i * V + idx] + (b_ih[i] + (b_hh[i] if b_hh != NULL and
                                                      m.cell != CELL_GRU else 0))
        else:
            for i in range(GH):
                gx[i] = b_ih[i] + (b_hh[i] if m.cell != CELL_GRU else 0)
            _mv(GH, H, P + off[4 * layer], H, m.rd_ih[layer], x, gx)
        if m.cell == CELL_GRU:
            memcpy(gh, b_hh, GH * sizeof(floating))
            _mv(GH, H, P + off[4 * layer + 1], H, m.rd_hh[layer], hk, gh)
            _gru_forward(gx, gh, hk, ghn, hk, 1, <int>H)
        else:
            _mv(GH, H, P + off[4 * layer + 1], H, m.rd_hh[layer], hk, gx)
            if m.cell == CELL_RNN:
                memcpy(hk, gx, H * sizeof(floating))
                _rnn_forward(hk, H, m.relu)
            else:
                _lstm_forward(gx, c + layer * H, c + layer * H, hk, 1, <int>H)
        x = hk


cdef Py_ssize_t _beam_search(const StackModel* m, const floating* P, Py_ssize_t n, int K,
                             floating* states, floating* work, double* cand, double* scores,
                             int* heap, int* ids, int* parents, int* out,
                             double* score) noexcept nogil:
    # n ids from the state in states' first row (rows (L, H) of h, then of c for lstm; room
    # for 2 x K rows of each); ids and parents: n x K. Returns -1, or the position whose
    # logits hold a NaN.
    cdef Py_ssize_t H = m.H, V = m.V, LH = <Py_ssize_t>m.L * H, GH = m.G * H, t, v, r
    cdef Py_ssize_t per = LH * (2 if m.cell == CELL_LSTM else 1)  # one row: h, then c
    cdef floating* cur = states
    cdef floating* nxt = states + K * per
    cdef floating* swap
    cdef floating* gx = work  # each region with a vector of slack after it (see _beam_work)
    cdef floating* gh = gx + _padded(GH) + 16
    cdef floating* ghn = gh + _padded(GH) + 16
    cdef floating* z = ghn + _padded(H) + 16
    cdef double* new_scores = scores + K
    cdef double mx, total, lse
    cdef int live = 1, kept, b, j, q
    scores[0] = 0.0
    for t in range(n):
        for b in range(live):
            memcpy(z, P + m.off[4 * m.L + 1], V * sizeof(floating))
            _mv(V, H, P + m.off[4 * m.L], H, m.rd_why, cur + b * per + LH - H, z)
            mx = z[0]
            for v in range(V):
                if z[v] != z[v]:
                    return t
                if z[v] > mx:
                    mx = z[v]
            if mx == INFINITY or mx == -INFINITY:  # softmax's limit: the mass on z == mx
                for v in range(V):
                    cand[b * V + v] = 0.0 if z[v] == mx else -INFINITY
            else:
                for v in range(V):
                    cand[b * V + v] = <double>z[v] - mx
            total = 0.0
            for v in range(V):
                total += exp(cand[b * V + v])
            lse = log(total)
            for v in range(V):
                cand[b * V + v] = scores[b] + (cand[b * V + v] - lse)
        kept = _beam_best(cand, live * <int>V, K, heap)
        for j in range(kept):
            q = heap[j]
            b = q // <int>V
            ids[t * K + j] = q - b * <int>V
            parents[t * K + j] = b
            new_scores[j] = cand[q]
            memcpy(nxt + j * per, cur + b * per, per * sizeof(floating))
        memcpy(scores, new_scores, kept * sizeof(double))
        live = kept
        swap = cur
        cur = nxt
        nxt = swap
        if t + 1 < n:
            for j in range(live):
                _beam_step(m, P, ids[t * K + j], cur + j * per,
                           cur + j * per + LH if m.cell == CELL_LSTM else NULL, gx, gh, ghn)
    score[0] = scores[0]
    j = 0
    for r in range(n - 1, -1, -1):
        out[r] = ids[r * K + j]
        j = parents[r * K + j]
    return -1


cdef inline Py_ssize_t _beam_work(Py_ssize_t GH, Py_ssize_t H, Py_ssize_t V) noexcept nogil:
    # gx (GH) | gh (GH) | ghn (H) | z (V), each followed by a vector of slack
    return 2 * _padded(GH) + _padded(H) + _padded(V) + 64


cdef tuple _legacy_spec(object H, object V):
    # min-char-rnn's model as the beam's one-layer tanh rnn: its checked offsets table (Wxh,
    # Whh, bh, no b_hh, Why, by), len(params) and the rows' read-past flags (see _stack_spec);
    # H, V: checked Python ints, so no product here overflows
    n = 2 * H * V + H * H + H + V
    whh, why = H * V, H * V + H * H
    table = np.array([0, whh, why + V * H, -1, why, why + V * H + H], dtype=np.int64)
    table.setflags(write=False)
    return (table, n, bytes([V * H + 16 <= n]), bytes([whh + H * H + 16 <= n]),
            why + V * H + 16 <= n)


def beam_search(const floating[::1] params not None, offsets, cell, relu, H, V, L,
                floating[:, ::1] h not None, floating[:, ::1] c, n, beam, bint legacy=False):
    """(ids (n,) int32, mean log-probability per id) of the best of `beam` hypotheses grown
    from the state h (and c, lstm) (L, H), left unchanged; see the numpy backend's
    beam_search. legacy: min-char-rnn's model (cell 0, tanh, L = 1, its own layout; offsets
    None). Raises FloatingPointError where the logits hold a NaN."""
    cdef StackModel m
    cdef int K = _stack_int(beam, "beam")
    cdef Py_ssize_t steps = _stack_int(n, "n")
    if legacy:
        if _stack_int(cell, "cell") != CELL_RNN or _stack_int(relu, "relu") != 0 or \
                _stack_int(L, "L") != 1:
            raise ValueError("legacy is min-char-rnn's model: cell 0, relu 0, L = 1")
        if offsets is not None:
            raise ValueError("legacy models have a fixed layout: pass offsets=None")
        if _stack_int(H, "H") < 1 or _stack_int(V, "V") < 1:
            raise ValueError(f"H and V must be positive, got {H} and {V}")
        got = _legacy_spec(_stack_int(H, "H"), _stack_int(V, "V"))
    else:
        got = _stack_spec(cell, relu, H, V, L)
        _check_offsets(offsets, got)
    _stack_model(&m, got, cell, relu, H, V, L)
    if params.shape[0] != m.n:
        raise ValueError(f"params has {params.shape[0]} elements; this model needs {m.n}")
    if K < 1:
        raise ValueError(f"beam must be a positive integer, got {K}")
    if <Py_ssize_t>K * m.V >= 2**31:  # candidate indices are C ints
        raise ValueError(f"beam={K} holds {<Py_ssize_t>K * m.V} candidates per step; the "
                         f"kernel takes fewer than 2**31")
    if steps < 0:
        raise ValueError(f"n must be >= 0, got {steps}")
    if h.shape[0] != m.L or h.shape[1] != m.H:
        raise ValueError(f"h has shape ({h.shape[0]}, {h.shape[1]}); expected (L, H) = "
                         f"({m.L}, {m.H})")
    if m.cell == CELL_LSTM:
        if c is None:
            raise ValueError("an lstm needs its cell state c (L, H)")
        if c.shape[0] != m.L or c.shape[1] != m.H:
            raise ValueError(f"c has shape ({c.shape[0]}, {c.shape[1]}); expected (L, H) = "
                             f"({m.L}, {m.H})")
    elif c is not None:
        raise ValueError("c is for lstm only (cell 1); pass None")
    out = np.empty(steps, dtype=np.intc)
    if steps == 0:
        return out, 0.0
    cdef Py_ssize_t LH = <Py_ssize_t>m.L * m.H, per = LH * (2 if m.cell == CELL_LSTM else 1)
    dtype = np.float32 if floating is float else np.float64
    # copies of their own: the kernel reads no caller's buffer but params (read-only here)
    state_buf = np.zeros(2 * K * per + 16, dtype=dtype)
    state_buf[:LH] = np.asarray(h).ravel()
    if m.cell == CELL_LSTM:
        state_buf[LH:2 * LH] = np.asarray(c).ravel()
    cdef floating[::1] st = state_buf
    cdef floating[::1] wk = np.zeros(_beam_work(m.G * m.H, m.H, m.V), dtype=dtype)
    cdef double[::1] cand = np.empty(<Py_ssize_t>K * m.V, dtype=np.float64)
    cdef double[::1] scores = np.empty(2 * K, dtype=np.float64)
    cdef int[::1] heap = np.empty(K, dtype=np.intc)
    cdef int[::1] ids = np.empty(steps * K, dtype=np.intc)
    cdef int[::1] parents = np.empty(steps * K, dtype=np.intc)
    cdef int[::1] ov = out
    cdef double score = 0.0
    cdef Py_ssize_t stopped
    with nogil:
        stopped = _beam_search(&m, &params[0], steps, K, &st[0], &wk[0], &cand[0], &scores[0],
                               &heap[0], &ids[0], &parents[0], &ov[0], &score)
    if stopped >= 0:
        raise _nan_logits_error(stopped, "float32" if floating is float else "float64")
    return out.astype(np.int32, copy=False), score / steps
