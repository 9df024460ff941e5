# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
cdef inline bint _ranks_before(const floating* z, int a, int b) noexcept nogil:
    # the order of top-k/top-p: higher logit first, the lower id first among equal logits
    return z[a] > z[b] or (z[a] == z[b] and a < b)


cdef void _sift_down(const floating* z, int* heap, int i, int size) noexcept nogil:
    cdef int c, tmp
    while True:
        c = 2 * i + 1
        if c >= size:
            return
        if c + 1 < size and _ranks_before(z, heap[c + 1], heap[c]):
            c += 1
        if not _ranks_before(z, heap[c], heap[i]):
            return
        tmp = heap[i]
        heap[i] = heap[c]
        heap[c] = tmp
        i = c


cdef void _rank_top(const floating* z, int V, int k, int* order) noexcept nogil:
    # heap-selects the k first ids in ranking order into order[V-1], order[V-2], ..., order[V-k];
    # order[0 : V-k] holds the others
    cdef int i, size = V, top
    for i in range(V):
        order[i] = i
    for i in range(V // 2 - 1, -1, -1):
        _sift_down(z, order, i, V)
    for i in range(k):
        size -= 1
        top = order[0]
        order[0] = order[size]
        order[size] = top
        _sift_down(z, order, 0, size)


cdef inline Py_ssize_t _panel_at(Py_ssize_t H, Py_ssize_t w0, Py_ssize_t w1, Py_ssize_t i,
                                 Py_ssize_t c) noexcept nogil:
    # where value (i, c) of an (H, w0 + w1) matrix stored as two panels of columns, (H, w0) then
    # (H, w1), each row-major, lies
    if c < w0:
        return i * w0 + c
    return H * w0 + i * w1 + (c - w0)


cdef int _pick_id(floating* z, int V, floating temperature, bint greedy, int top_k,
                  double top_p, double u, int* order, double* cum) noexcept nogil:
    # The id `generate` picks from logits z (overwritten): the argmax when greedy; else the
    # inverse CDF of the tempered masses, after top-k / top-p filtering. -1 when a logit is NaN
    # (weights that overflow): there is no distribution to draw from.
    cdef Py_ssize_t v, n_le
    cdef int j, n_rank, n_keep, n_nan = 0
    cdef double c, kept, target
    cdef bint filtered = (0 < top_k < V) or top_p < 1
    cdef floating m
    for v in range(V):
        n_nan += z[v] != z[v]
    if n_nan:
        return -1
    m = _highest(z, V)
    if greedy:
        for v in range(V):
            if z[v] == m:
                return <int>v
        return 0
    n_rank = top_k if 0 < top_k < V else V
    if filtered:
        _rank_top(z, V, n_rank, order)
    if m == INFINITY or m == -INFINITY:
        # z - m is NaN where z equals m: softmax's limit, mass 1 on each logit equal to the
        # highest and none elsewhere (as the numpy and torch backends)
        for v in range(V):
            z[v] = 1 if z[v] == m else 0
    else:
        for v in range(V):
            z[v] = _exp((z[v] - m) / temperature)
    if filtered:
        n_keep = n_rank
        if top_p < 1:
            kept = 0.0
            for j in range(n_rank):
                kept += z[order[V - 1 - j]]
            c = 0.0
            for j in range(n_rank):
                c += z[order[V - 1 - j]]
                if c >= top_p * kept:
                    n_keep = j + 1
                    break
        for j in range(V - n_keep):
            z[order[j]] = 0
    # inverse CDF: the first id whose cumulative mass (in double, in id order) exceeds u * total,
    # found by counting the cumulative masses up to it (no branch per id); it has mass. If
    # rounding leaves none, the last id with mass.
    c = 0.0
    for v in range(V):
        c += z[v]
        cum[v] = c
    target = u * c
    n_le = 0
    for v in range(V):
        n_le += cum[v] <= target
    if n_le < V:
        return <int>n_le
    for v in range(V - 1, -1, -1):
        if z[v] > 0:
            return <int>v
    return V - 1


cdef Py_ssize_t generate(const floating* P, int H, int V, floating* h, Py_ssize_t n,
                        const double* u, floating temperature, bint greedy, int top_k,
                        double top_p, int* out, floating* work, int* order) noexcept nogil:
    # One character is two small matrix-vector products on the same state h: Why h and Whh h.
    # Both matrices are transposed once per call, side by side, into WT: row k holds column k
    # of Why and then column k of Whh, zero-padded together to whole vectors, so _rowsum over WT
    # builds both products in registers as sums of rows (where a loop adding scaled rows into
    # them in memory, four rows at a time, ran at a third of the speed). WT is stored as two
    # panels of columns, each contiguous, and characters take the panels in alternating order:
    # at H=100 the matrices (70 KB) do not fit the L1 cache together, but the panel read last is
    # still there when the next character starts with it (a pass took 0.57-0.61 us against 0.70
    # in a C harness). Each sum runs over the rows in the same order either way: the same ids.
    cdef const floating* Wxh = P
    cdef const floating* Whh = P + <Py_ssize_t>H * V
    cdef const floating* Why = Whh + <Py_ssize_t>H * H
    cdef const floating* bh = Why + <Py_ssize_t>V * H
    cdef const floating* by = bh + H
    # rows padded to a multiple of 16 values (zeros), so the row sums have no scalar tail
    cdef Py_ssize_t Hp = _padded(H), Vp = _padded(V)
    cdef Py_ssize_t ld = _padded(V + H), w0 = (ld // 16 + 1) // 2 * 16, w1 = ld - w0
    cdef floating* room = work + V * Hp + <Py_ssize_t>H * (Vp + Hp)  # z's room (sample_work_size)
    cdef floating* WxhT = work                          # (V,Hp), with bh added to every row
    cdef floating* WT = WxhT + V * Hp                   # (H, ld): Why^T | Whh^T, as panels
    cdef floating* WT1 = WT + <Py_ssize_t>H * w0        # (H, w0) columns [0, w0), (H, w1) the rest
    cdef floating* z = _clear_of(room, WT, w0)  # logits, then Whh h
    cdef floating* hh = z + V
    # V cumulative masses after z's room, on a 64-byte line whatever the buffer's alignment
    cdef double* cum = <double*>((<size_t>(room + SCRATCH_SLACK + Vp + Hp) + 63) &
                                 ~(<size_t>63))
    cdef const floating* col
    cdef Py_ssize_t k, i, r
    cdef int idx
    memset(work, 0, (V * Hp + <Py_ssize_t>H * ld) * sizeof(floating))
    memset(z, 0, ld * sizeof(floating))
    for i in range(H):
        for r in range(V):
            WxhT[r * Hp + i] = Wxh[i * V + r] + bh[i]
            WT[_panel_at(H, w0, w1, i, r)] = Why[r * H + i]
        for r in range(H):
            WT[_panel_at(H, w0, w1, i, V + r)] = Whh[r * H + i]
    for k in range(n):
        memcpy(z, by, V * sizeof(floating))
        memset(hh, 0, (ld - V) * sizeof(floating))
        if k % 2 == 0:
            _rowsum(w0, H, WT, w0, h, z)
            _rowsum(w1, H, WT1, w1, h, z + w0)
        else:
            _rowsum(w1, H, WT1, w1, h, z + w0)
            _rowsum(w0, H, WT, w0, h, z)
        idx = _pick_id(z, V, temperature, greedy, top_k, top_p, u[k] if not greedy else 0.0,
                       order, cum)
        if idx < 0:  # (weights that overflow): no distribution to draw from
            return k
        out[k] = idx
        col = WxhT + idx * Hp
        for i in range(H):
            h[i] = _tanh(col[i] + hh[i])
    return -1
