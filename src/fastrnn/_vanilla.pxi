# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
# ---------------------------------------------------------------------------------------------
# Kernels (contract in _hot.pxd)

cdef enum:
    WORK_SLACK = 16  # values after hs that the products may read past its last row (see _mm)


cdef enum:
    DOT_MIN_H = 256  # B=1 forward: from this H on, dot products on Whh beat transposing it


cdef inline bint _split_whh(int B, int H) noexcept nogil:
    # Whether a chunk of B rows runs the recurrence of its one sequence in two parts: its first
    # H - H % 16 units by ROWSUM on whole vectors, and the H % 16 others by dot products (_dots).
    # Padding the last vector instead cost as much as 16 more units: at H=100 700 vector loads a
    # step against 628, and the padded WhhT (44.8 KB) did not stay in a 48 KB L1 cache (with the
    # input columns gathered apart, 40 KB do: see step). Up to 8 units of tail (more cost about as
    # many loads as the padded vector), and from H = 48 on (a min-char step took 0.94x the time at
    # H=100 and 200, 0.98x at 50 and 68, but 1.03x at 40). Not for one-row parts of a batch (B > 1):
    # their threads share the prepared weights, which BPTT here rewrites (_whh_rows).
    return B == 1 and 48 <= H < DOT_MIN_H and 0 < H % 16 <= 8


cdef inline Py_ssize_t _prepared_size(Py_ssize_t H, Py_ssize_t V) noexcept nogil:
    # the transposed weights at the start of a chunk's work buffer (see _prepare)
    return H * _transposed_ld(H) + H * _transposed_ld(V)


cdef inline bint _tail_whh(Py_ssize_t H, Py_ssize_t V) noexcept nogil:
    # whether a row of Whh (inside P) can be read 16 values past its end (see _mm)
    return V * H + H + V >= 16


cdef inline bint _tail_why(Py_ssize_t H, Py_ssize_t V) noexcept nogil:
    return H + V >= 16


cdef void _prepare(const floating* P, int H, int V, int B, bint split,
                   floating* Wt) noexcept nogil:
    # Wt = WhhT (H, ldh) | WhyT (H, ldv): the recurrent and output weights transposed, in rows
    # padded with zeros to whole vectors (ldh, ldv: _transposed_ld), so that the forward pass's
    # products read them row-major (_mm). A chunk of one sequence with H >= DOT_MIN_H takes dot
    # products on Whh itself instead (_mv), and WhhT is left alone. One whose recurrence is split
    # (split, from _split_whh; Hd = H - H % 16 units by ROWSUM, the rest by _dots) holds in
    # WhhT's place the transpose of Whh's first Hd rows (H, Hd), for the forward step's first Hd
    # units, then that of its last H % 16 columns, in rows of _padded(H) (H % 16, _padded(H);
    # the values past H are not read), for BPTT's last units (it fits: H % 16 <= 8 rows of fewer
    # than H + 16 values take less than 16 * H). BPTT then rewrites the first part (_whh_rows).
    cdef Py_ssize_t ldh = _transposed_ld(H), ldv = _transposed_ld(V), i
    cdef Py_ssize_t Hd = H - H % 16, Hp = _padded(H)
    cdef const floating* Whh = P + <Py_ssize_t>H * V
    cdef floating* WhyT = Wt + H * ldh
    cdef floating* tail = Wt + H * Hd
    if split:
        _transpose(Hd, H, Whh, H, Wt, Hd)
        _transpose(H, H - Hd, Whh + Hd, H, tail, Hp)
    elif B > 1 or H < DOT_MIN_H:
        _transpose(H, H, Whh, H, Wt, ldh)
        for i in range(H):
            memset(Wt + i * ldh + H, 0, (ldh - H) * sizeof(floating))
    _transpose(V, H, Whh + <Py_ssize_t>H * H, H, WhyT, ldv)
    for i in range(H):
        memset(WhyT + i * ldv + V, 0, (ldv - V) * sizeof(floating))


cdef void _whh_rows(const floating* P, int H, int V, floating* Wt) noexcept nogil:
    # BPTT of a split recurrence (_split_whh) reads Whh's first Hd = H - H % 16 columns in rows
    # of Hd values (aligned, 64-byte lines each: 7.4-7.8 us a chunk at H=100 in a C harness,
    # against 10.9-12.2 on Whh's rows of H) from where the forward pass's transpose of Whh's
    # first rows was: forward is done with it
    cdef Py_ssize_t Hd = H - H % 16, i
    cdef const floating* Whh = P + <Py_ssize_t>H * V
    for i in range(H):
        memcpy(Wt + i * Hd, Whh + i * H, Hd * sizeof(floating))


cdef inline void _input(const floating* P, int H, int V, int x,
                        floating* row) noexcept nogil:
    # row (H) = Wxh[:, x] + bh: the one-hot input is a column gather of Wxh
    cdef const floating* bh = P + 2 * <Py_ssize_t>H * V + <Py_ssize_t>H * H
    cdef Py_ssize_t i
    for i in range(H):
        row[i] = P[i * V + x] + bh[i]


cdef void step(const floating* P, int H, int V, int B, const int* x, int x_stride,
               const floating* Wt, bint split, const floating* h_prev,
               floating* h_next) noexcept nogil:
    # split: the recurrence in two parts (_split_whh), on the weights _prepare laid out for it,
    # and h_next already holds the step's input (_input: forward gathers every step's first, so
    # that in the steps the recurrent weights, 40 KB at H=100, have the L1 cache to themselves)
    cdef const floating* Whh = P + <Py_ssize_t>H * V
    cdef Py_ssize_t b
    if split:  # += h_prev @ WhhT: its first Hd columns, then Whh's last rows
        _split_mv(H, Wt, Whh + (H - H % 16) * <Py_ssize_t>H, H, h_prev, h_next)
    else:
        for b in range(B):
            _input(P, H, V, x[b * x_stride], h_next + b * H)
        if B == 1 and H >= DOT_MIN_H:
            _mv(H, H, Whh, H, _tail_whh(H, V), h_prev, h_next)  # += Whh @ h_prev
        else:  # += h_prev @ WhhT
            _mm(B, H, H, h_prev, H, 1, Wt, _transposed_ld(H), True, h_next, H)
    # on whole vectors: the values past the last row land in the next step's rows, still to be
    # written, or in the WORK_SLACK zeros after the last (tanh(0) = 0); no scalar tail loop. Not
    # when split: the next step's row holds its input already.
    if split:
        _tanh_inplace(h_next, H)
    else:
        _tanh_inplace(h_next, _padded(<Py_ssize_t>B * H))


cdef inline floating _highest(const floating* z, Py_ssize_t V) noexcept nogil:
    # max(z[:V]), V >= 1: per lane of 16 first (a vector max, where one running maximum is a
    # chain of dependent compares); NaNs are skipped, but for one in z[0], which every lane starts
    # from (so the same value as a running maximum from z[0])
    cdef floating lane_max[16]
    cdef floating m
    cdef Py_ssize_t v = 0
    cdef int j
    for j in range(16):
        lane_max[j] = z[0]
    while v + 16 <= V:
        for j in range(16):
            lane_max[j] = z[v + j] if z[v + j] > lane_max[j] else lane_max[j]
        v += 16
    for j in range(V - v):
        lane_max[j] = z[v + j] if z[v + j] > lane_max[j] else lane_max[j]
    m = lane_max[0]
    for j in range(1, 16):
        if lane_max[j] > m:
            m = lane_max[j]
    return m


cdef double _softmax_xent(floating* Z, int V, int B, int T, const int* Y) noexcept nogil:
    # Rows of Z are (t, b); turns logits into dZ = softmax - onehot and returns the summed NLL.
    cdef double loss = 0.0
    cdef Py_ssize_t t, b, v
    cdef floating* z
    cdef floating m, s, inv
    cdef int y
    for t in range(T):
        for b in range(B):
            z = Z + (t * B + b) * <Py_ssize_t>V
            y = Y[b * T + t]
            m = _highest(z, V)
            loss -= z[y] - m
            for v in range(V):
                z[v] = _exp(z[v] - m)
            s = _sum(z, V)
            loss += log(s)
            inv = 1 / s
            for v in range(V):
                z[v] = z[v] * inv
            z[y] -= 1
    return loss


cdef double forward(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                    const floating* Wt, bint split, floating* hs, floating* Z) noexcept nogil:
    cdef const floating* by = P + 2 * <Py_ssize_t>H * V + <Py_ssize_t>H * H + H
    cdef const floating* WhyT = Wt + H * _transposed_ld(H)
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, t, r
    memset(hs + (T + 1) * BH, 0, WORK_SLACK * sizeof(floating))
    if split:  # every step's input first (see step)
        for t in range(T):
            _input(P, H, V, X[t], hs + (t + 1) * BH)
    for t in range(T):
        step(P, H, V, B, X + t, T, Wt, split, hs + t * BH, hs + (t + 1) * BH)
    # logits for the whole chunk: Z (T*B, V) = hs[1:] (T*B, H) @ Why^T + by
    for r in range(<Py_ssize_t>T * B):
        memcpy(Z + r * V, by, V * sizeof(floating))
    _mm(<Py_ssize_t>T * B, V, H, hs + BH, H, 1, WhyT, _transposed_ld(V), True, Z, V)
    if Y == NULL:
        return 0.0
    return _softmax_xent(Z, V, B, T, Y)


cdef inline Py_ssize_t _block_steps(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
                                    Py_ssize_t V) noexcept nogil:
    # BPTT keeps dL/dh for a block of time steps, so the input-to-state and weight gradients are
    # one matrix product per block. The whole chunk is one block unless its B*T*H values would
    # pass a quarter of the analytic minimum memory of a step (parameters, gradients and optimizer
    # state, plus B*T*(H+V) activations); then blocks are as long as that allows (K = steps*B of
    # a product stays large enough to run near the machine's peak).
    cdef Py_ssize_t n_params = 2 * H * V + H * H + H + V
    cdef Py_ssize_t budget = (3 * n_params + T * B * (H + V)) // 4
    if T * B * H <= budget:
        return T
    return max(1, min(T, budget // (B * H)))


cdef void backward(const floating* P, int H, int V, int B, int T, const int* X,
                   const floating* Wt, bint split, const floating* hs, const floating* dZ,
                   floating* dH, floating* G, floating* dh0, floating* dXT) noexcept nogil:
    cdef Py_ssize_t HV = <Py_ssize_t>H * V, BH = <Py_ssize_t>B * H
    cdef Py_ssize_t TB = <Py_ssize_t>T * B, t, b, i, r, v, t0, t1
    cdef Py_ssize_t steps = _block_steps(B, T, H, V)
    cdef const floating* Whh = P + HV
    cdef const floating* Why = Whh + <Py_ssize_t>H * H
    cdef floating* dWxh = G
    cdef floating* dWhh = G + HV
    cdef floating* dWhy = dWhh + <Py_ssize_t>H * H
    cdef floating* dbh = dWhy + HV
    cdef floating* dby = dbh + H
    cdef floating* carry = dH + steps * BH   # dL/dh carried into the block before
    cdef floating* dh
    cdef const floating* h
    cdef const floating* row
    cdef floating* dst
    cdef floating* col
    cdef floating* scratch = dXT + HV  # _padded(H) values: _rowsum_into's padded vector

    # output layer, whole chunk at once: dWhy (V,H) = dZ^T @ hs[1:] (the products that set a
    # gradient, _mm_set, need no cleared buffer: of G only the biases are summed into; dWxh is
    # written whole at the end, from dXT)
    memset(dbh, 0, (H + V) * sizeof(floating))
    memset(dXT, 0, HV * sizeof(floating))
    _mm_set(V, H, TB, dZ, 1, V, hs + BH, H, True, dWhy, H)  # hs has WORK_SLACK after it
    for r in range(TB):
        for v in range(V):
            dby[v] += dZ[r * V + v]

    t1 = T
    while t1 > 0:  # blocks of steps [t0, t1), newest first
        t0 = max(t1 - steps, 0)
        # dL/dh from the outputs, for the whole block at once; plus what the block after sent
        _mm_set((t1 - t0) * B, H, V, dZ + t0 * B * V, V, 1, Why, H, _tail_why(H, V), dH, H)
        if t1 < T:
            dh = dH + (t1 - 1 - t0) * BH
            for i in range(BH):
                dh[i] += carry[i]
        # the recurrence, newest step first: dH[t] becomes dL/d(pre-activation) of step t, and
        # its pull through Whh goes into dH[t-1] (or the carry, at the block's first step)
        for t in range(t1 - 1, t0 - 1, -1):
            dh = dH + (t - t0) * BH
            h = hs + (t + 1) * BH
            for i in range(BH):
                dh[i] = dh[i] * (<floating>1 - h[i] * h[i])
            if t > t0:
                dst = dh - BH
            elif t > 0:
                dst = carry
                memset(dst, 0, BH * sizeof(floating))
            elif dh0 != NULL:
                dst = dh0
                memset(dst, 0, BH * sizeof(floating))
            else:
                break
            if split:  # += Whh^T dh: Whh's first Hd columns (_whh_rows), its last transposed
                _split_mv(H, Wt, Wt + H * (H - H % 16), _padded(H), dh, dst)
            elif B == 1 and H >= DOT_MIN_H:
                _rowsum_into(H, H, Whh, H, dh, dst, scratch)  # Whh is followed by Why
            else:
                _mm(B, H, H, dh, H, 1, Whh, H, _tail_whh(H, V), dst, H)
        # recurrent weights, the block at once: dWhh += dH^T @ hs[t0:t1] (= for the first)
        if t1 == T:
            _mm_set(H, H, (t1 - t0) * B, dH, 1, H, hs + t0 * BH, H, True, dWhh, H)
        else:
            _mm(H, H, (t1 - t0) * B, dH, 1, H, hs + t0 * BH, H, True, dWhh, H)
        for t in range(t0, t1):
            for b in range(B):
                # the one-hot input's gradient: row x of Wxh^T (dXT, contiguous) gets dh
                row = dH + ((t - t0) * B + b) * H
                col = dXT + X[b * T + t] * <Py_ssize_t>H
                for i in range(H):
                    dbh[i] += row[i]
                    col[i] += row[i]
        t1 = t0
    _transpose(V, H, dXT, H, dWxh, V)  # dWxh (H,V) = dXT^T
