# Beam search (included by _hot.pyx): the numpy backend's beam_search (see its docstring and
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
            _gru_forward(gx, gh, NULL, NULL, hk, ghn, hk, 1, <int>H)
        else:
            _mv(GH, H, P + off[4 * layer + 1], H, m.rd_hh[layer], hk, gx)
            if m.cell == CELL_RNN:
                memcpy(hk, gx, H * sizeof(floating))
                _rnn_forward(hk, 1, <int>H, NULL, m.relu)
            else:
                _lstm_forward(gx, NULL, c + layer * H, c + layer * H, hk, 1, <int>H)
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
