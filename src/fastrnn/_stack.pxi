# The chunk driver of the stacked models (included by _kernels.pyx): L layers of rnn, lstm or
# gru cells (_cells.pxi) under the shared head. Everything here is cell-agnostic but for the one
# call per step to the cell's pointwise forward or backward; the products are _mm / _mm_set
# (_tiles.h), the head is _softmax_xent's, the optimizer `update`'s.
#
# The haste / llm.c pattern: a layer's input projection for all T*B rows of the chunk is one
# product before its steps (layer 0's rows of weight_ih_l0 transposed, gathered step by step:
# the input is one-hot), each step adds its recurrent product and runs the cell, which adds the
# biases; BPTT collects the gate gradients dG of all steps, then takes each weight gradient as
# one product over all T*B rows (dW_hh = dG^T H_prev, dW_ih = dG^T X_in, dX_in = dG W_ih) and
# layer 0's dW_ih as a scatter-add of rows of dG. Rows of a chunk are independent sequences, so
# a chunk is split into `parts` groups of rows, each running forward and BPTT on its own thread
# with its own gradient buffer (summed after in a fixed order), as the vanilla kernels' _chunk
# does.
#
# The work buffer (all counts in values of the model's dtype, each region a multiple of 16):
#   prepared   per layer k: W_ih^T | W_hh^T | bias row (ldg) | W_hh | W_ih (k > 0), then
#              Why^T (H, ldv). Layer 0's W_ih^T is (V, ldg), rows padded with zeros (ldg =
#              _transposed_ld(G*H)), for its gather; the other matrices are in panels (_pack):
#              the transposes for the forward products, W_hh and W_ih for BPTT's (those two
#              only with gradients). The bias row, which the cells add, is b_ih + b_hh (b_ih
#              alone for gru, whose b_hh goes inside r's product)
#   per part   (rows bp, TB = T*bp, BH = bp*H; see _part_layout)
#     hs   L x (T+1, bp, H)   states, hs[0] = h0; slack after each (products read past rows)
#     cs   L x (T+1, bp, H)   lstm cell states
#     acts L x (T, bp, G*H)   gate activations (lstm, gru); rnn keeps only hs
#     ghn  L x (T, bp, H)     gru: W_hn h + b_hn of every step (r multiplies it)
#     xd   (L-1) x (T, bp, H) dropped outputs, the next layer's input when masks are given
#     Z    (T, bp, V)         logits, then dZ
#     dH   (T, bp, H)         dL/d(layer output) from above, one layer at a time
#     dG   (T, bp, G*H)       dL/d(pre-activations); gru: of gx
#     dGh  (T, bp, H)         gru: the n block of dL/d(gh), which r scales (its r and z blocks
#                             are dG's)
#     dXT  (V, ldg)           layer 0's dW_ih transposed (rows are scatter-added)
#     gh, carry, dc           one step's gru recurrent projection (in BPTT: its dL/d(gh)), dL/dh
#                             and dL/dc carried back
#     ra, rh, rs              bf16 mode (_bf16.pxi): rounded copies of a product's operands:
#                             (T, bp, max(G*H, V)) gates or logits, (T, bp, H) states, one step's
#   bf16 mode: after the prepared weights, Why rounded (V, H) for BPTT's dL/dh_top
#   gradients  of parts 1, 2, ... (len(params) each, padded)

from libc.stdint cimport int64_t


cdef struct StackModel:
    int cell                 # CELL_RNN, CELL_LSTM, CELL_GRU
    bint relu                # rnn: relu instead of tanh
    int H, V, L, G
    Py_ssize_t n             # len(params)
    const int64_t* off       # checked copy: [w_ih, w_hh, b_ih, b_hh] * L + [Why, by]
    bint rd_why              # whether Why's rows can be read 16 values past their end
    const char* rd_ih        # per layer: the same for weight_ih and weight_hh (sampling)
    const char* rd_hh
    bint bf16                # products of bfloat16-rounded operands (_bf16.pxi)


cdef struct PartLayout:      # offsets of a part's buffers in its slice of work, and strides
    Py_ssize_t hs, hs_k, cs, cs_k, acts, acts_k, ghn, ghn_k, xd, xd_k
    Py_ssize_t Z, dH, dG, dGh, dXT, gh, carry, dc, ra, rh, rs, size


cdef enum:
    PANEL = 64  # columns of a panel: one register tile's width in float32 (_tiles.h)
    ROW_BLOCK_BYTES = 512 * 1024  # rows of A per block of _mm_panels: at most this many bytes
    L2_RESIDENT_BYTES = 1024 * 1024  # a weight matrix this small stays in L2 between steps


cdef inline Py_ssize_t _panels_size(Py_ssize_t K, Py_ssize_t N) noexcept nogil:
    # values of a (K, N) matrix in panels (_pack): K * PANEL per whole panel, K * _padded(rest)
    return K * _padded(N)


cdef void _pack(Py_ssize_t K, Py_ssize_t N, const floating* W, Py_ssize_t ldw,
                floating* out) noexcept nogil:
    # W (K, N; rows ldw apart) as panels of PANEL columns, each (K, width padded to whole
    # vectors with zeros) row-major, one after another. The products read a panel's rows as one
    # contiguous stream: read in place, rows a page or more apart, a register tile's loads
    # missed the prefetchers and the TLB (one core, float32, best of five: the per-step
    # 64x512 @ 512x2048 at 143 GFLOP/s against 117, the BPTT 8192x2048 @ 2048x512 148 vs 118)
    cdef Py_ssize_t pb, p0, w, ld, k
    cdef floating* dst
    for pb in range((N + PANEL - 1) // PANEL):
        p0 = pb * <Py_ssize_t>PANEL
        w = min(<Py_ssize_t>PANEL, N - p0)
        ld = _padded(w)
        dst = out + K * p0
        for k in range(K):
            memcpy(dst + k * ld, W + k * ldw + p0, w * sizeof(floating))
            memset(dst + k * ld + w, 0, (ld - w) * sizeof(floating))


cdef void _pack_t(Py_ssize_t R, Py_ssize_t C, const floating* W, floating* out) noexcept nogil:
    # W^T in panels (_pack), for W (R, C) row-major: panel p holds rows [p0, p0 + w) of W
    # transposed
    cdef Py_ssize_t pb, p0, w, ld, k
    cdef floating* dst
    for pb in range((R + PANEL - 1) // PANEL):
        p0 = pb * <Py_ssize_t>PANEL
        w = min(<Py_ssize_t>PANEL, R - p0)
        ld = _padded(w)
        dst = out + C * p0
        _transpose(w, C, W + p0 * C, C, dst, ld)
        if ld > w:
            for k in range(C):
                memset(dst + k * ld + w, 0, (ld - w) * sizeof(floating))


cdef inline void _mm_panels(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                            Py_ssize_t a_rs, Py_ssize_t a_ks, const floating* Wp, floating* C,
                            Py_ssize_t ldc, bint zero_c) noexcept nogil:
    _mm_panels_pf(M, N, K, A, a_rs, a_ks, Wp, C, ldc, zero_c, NULL, 0)


cdef inline const floating* _pf_share(const floating* p, Py_ssize_t n, Py_ssize_t i,
                                      Py_ssize_t parts, Py_ssize_t* n_pf) noexcept nogil:
    # share i of `parts` of the n values from p: where it starts, and its length in n_pf
    cdef Py_ssize_t share = (n + parts - 1) // parts
    cdef Py_ssize_t at = min(i * share, n)
    n_pf[0] = min(share, n - at)
    return p + at


cdef inline void _mm_panels_pf(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                               Py_ssize_t a_rs, Py_ssize_t a_ks, const floating* Wp, floating* C,
                               Py_ssize_t ldc, bint zero_c, const floating* pf,
                               Py_ssize_t pf_len) noexcept nogil:
    # C (M, N) += A (M, K) @ W (K, N) (zero_c: =), W in panels (_pack): one product per panel,
    # during which the next panel is fetched into L2 (after the last, the first: a step of the
    # recurrence reads the same matrix again), for a W larger than L2 (_tiles.h). Many rows of
    # A (the input projection or dX of a whole chunk) go in blocks of ROW_BLOCK_BYTES, every
    # panel over one block before the next: panel by panel over all rows read A from L3 once
    # per panel (one core, operands cold, GRU H=256's input projection: 127 against 146
    # GFLOP/s; LSTM H=512's 144 against 158); during a block, the next block's rows of A and
    # of C are fetched (C's rows are written cold: rnn L=3 H=256's input projections 15.3-16.3
    # against 14.7-14.9 ms per step): A's during the first half of the panels, C's during the
    # rest. That is for a W that stays in L2; a larger one has its next panel fetched, as with
    # one block (LSTM H=512, B=32 on one core: the input projection 59-66 -> 57 ms per step,
    # dL/dx 60-65 -> 55-57). pf (pf_len values), if given, is fetched instead, a share during
    # each panel.
    cdef Py_ssize_t pb, p0, w, nb = (N + PANEL - 1) // PANEL, q0, i0 = 0, mb, mn, n_pf, half
    cdef Py_ssize_t n1 = pf_len, n2 = 0
    cdef const floating* p1 = pf
    cdef const floating* p2 = NULL
    cdef const floating* at
    cdef Py_ssize_t mc = max(<Py_ssize_t>24, ROW_BLOCK_BYTES // (K * sizeof(floating)) // 6 * 6)
    while i0 < M:
        mb = min(mc, M - i0)
        if pf == NULL:
            p1 = p2 = NULL
            if i0 + mb < M and a_ks == 1 and \
                    K * _padded(N) * sizeof(floating) <= L2_RESIDENT_BYTES:
                mn = min(mc, M - i0 - mb)
                p1, n1 = A + (i0 + mb) * a_rs, mn * a_rs
                p2, n2 = C + (i0 + mb) * ldc, mn * ldc
        half = (nb + 1) // 2 if p2 != NULL else nb
        for pb in range(nb):
            p0 = pb * <Py_ssize_t>PANEL
            w = min(<Py_ssize_t>PANEL, N - p0)
            if p1 == NULL:
                q0 = p0 + PANEL if pb + 1 < nb else 0
                at = Wp + K * q0
                n_pf = K * _padded(min(<Py_ssize_t>PANEL, N - q0))
            elif pb < half:
                at = _pf_share(p1, n1, pb, half, &n_pf)
            else:
                at = _pf_share(p2, n2, pb - half, nb - half, &n_pf)
            _mm_pf(mb, w, K, A + i0 * a_rs, a_rs, a_ks, Wp + K * p0, _padded(w), True,
                   C + i0 * ldc + p0, ldc, zero_c, at, n_pf)
        i0 += mb


cdef inline const floating* _operand(const StackModel* m, const floating* src, Py_ssize_t n,
                                     floating* scratch) noexcept nogil:
    # a product's operand: src itself, or in bf16 mode its n values rounded into scratch (which
    # has WORK_SLACK zeros after them: the products may read past the last row)
    if not m.bf16:
        return src
    _rounded(src, n, scratch)
    memset(scratch + n, 0, WORK_SLACK * sizeof(floating))
    return scratch


cdef inline Py_ssize_t _prep_layer(const StackModel* m, int k) noexcept nogil:
    # values of layer k's prepared weights (see the layout above)
    cdef Py_ssize_t H = m.H, GH = m.G * H
    cdef Py_ssize_t size = m.V * _transposed_ld(GH) if k == 0 else _panels_size(H, GH)
    size += _panels_size(H, GH) + _transposed_ld(GH) + _panels_size(GH, H)
    if k > 0:
        size += _panels_size(GH, H)
    return size


cdef inline Py_ssize_t _stack_prep_at(const StackModel* m, int k) noexcept nogil:
    # where layer k's prepared weights start (k = L: Why^T's), and, for k = L + 1, their end
    cdef Py_ssize_t at = 0
    cdef int j
    for j in range(min(k, m.L)):
        at += _prep_layer(m, j)
    if k > m.L:
        at += <Py_ssize_t>m.H * _transposed_ld(m.V)
        if m.bf16:
            at += _padded(<Py_ssize_t>m.V * m.H + WORK_SLACK)
    return at


cdef inline floating* _prep_whh_t(const StackModel* m, floating* Wt, int k) noexcept nogil:
    # layer k's W_hh^T panels; the bias row, W_hh's panels and W_ih's follow
    cdef Py_ssize_t GH = m.G * m.H
    return Wt + _stack_prep_at(m, k) + (m.V * _transposed_ld(GH) if k == 0 else
                                        _panels_size(m.H, GH))


cdef inline void _part_layout(const StackModel* m, int bp, int T, PartLayout* p) noexcept nogil:
    cdef Py_ssize_t H = m.H, L = m.L, BH = bp * H, TB = <Py_ssize_t>T * bp, GH = m.G * H
    cdef Py_ssize_t o = 0
    p.hs_k = _padded((T + 1) * BH + WORK_SLACK)
    p.hs = o
    o += L * p.hs_k
    p.cs_k = _padded((T + 1) * BH) if m.cell == CELL_LSTM else 0
    p.cs = o
    o += L * p.cs_k
    p.acts_k = _padded(TB * GH) if m.cell != CELL_RNN else 0
    p.acts = o
    o += L * p.acts_k
    p.ghn_k = _padded(TB * H) if m.cell == CELL_GRU else 0
    p.ghn = o
    o += L * p.ghn_k
    p.xd_k = _padded(TB * H + WORK_SLACK)
    p.xd = o
    o += (L - 1) * p.xd_k
    p.Z = o
    o += _padded(TB * m.V)
    p.dH = o
    o += _padded(TB * H)
    p.dG = o
    o += _padded(TB * GH)
    p.dGh = o
    if m.cell == CELL_GRU:
        o += _padded(TB * H)
    p.dXT = o
    o += m.V * _transposed_ld(GH)
    p.gh = o
    if m.cell == CELL_GRU:
        o += _padded(bp * GH)
    p.carry = o
    o += _padded(BH)
    p.dc = o
    o += _padded(BH)
    p.ra = p.rh = p.rs = o
    if m.bf16:
        o += _padded(TB * max(GH, <Py_ssize_t>m.V) + WORK_SLACK)
        p.rh = o
        o += _padded(TB * H + WORK_SLACK)
        p.rs = o
        o += _padded(bp * GH + WORK_SLACK)
    p.size = o


cdef inline Py_ssize_t _stack_part_at(const StackModel* m, int B, int T, int parts,
                                      int p) noexcept nogil:
    # where part p's slice of work starts (p = parts: the extra gradient buffers)
    cdef Py_ssize_t at = _stack_prep_at(m, m.L + 1)
    cdef PartLayout lay
    cdef int q
    for q in range(p):
        _part_layout(m, _part_start(B, parts, q + 1) - _part_start(B, parts, q), T, &lay)
        at += lay.size
    return at


cdef inline Py_ssize_t _stack_work(const StackModel* m, int B, int T, int parts) noexcept nogil:
    return _stack_part_at(m, B, T, parts, parts) + (parts - 1) * _padded(m.n)


cdef void _stack_prepare_job(const StackModel* m, const floating* P, floating* Wt, bint grads,
                             int j) noexcept nogil:
    # job j of the weight copies at the start of work (see above): layer j // 4's W_ih^T (its
    # gather rows for layer 0), W_hh^T with the bias row, and with grads (BPTT's) W_hh, W_ih;
    # j = 4 L: Why^T. Each job writes its own region, so they may run on several threads.
    cdef Py_ssize_t H = m.H, GH = m.G * H, ldg = _transposed_ld(GH), ldv = _transposed_ld(m.V)
    cdef Py_ssize_t i, size = _panels_size(GH, H)
    cdef int k = j // 4, slot = j % 4
    cdef floating* base = Wt + _stack_prep_at(m, k)
    cdef floating* WhhT
    cdef floating* bias
    cdef floating* dst
    cdef const floating* b_hh
    if k == m.L:  # (the last job, j = 4 L)
        _transpose(m.V, H, P + m.off[4 * m.L], H, base, ldv)
        for i in range(H):
            memset(base + i * ldv + m.V, 0, (ldv - m.V) * sizeof(floating))
        if m.bf16:
            _rounded(base, H * ldv, base)
            base += H * ldv
            _rounded(P + m.off[4 * m.L], m.V * H, base)
            memset(base + m.V * H, 0, WORK_SLACK * sizeof(floating))
        return
    WhhT = _prep_whh_t(m, Wt, k)
    bias = WhhT + _panels_size(H, GH)
    if slot == 0:
        if k == 0:  # rows to gather (not rounded: the gather copies them exactly)
            _transpose(GH, m.V, P + m.off[0], m.V, base, ldg)
            for i in range(m.V):
                memset(base + i * ldg + GH, 0, (ldg - GH) * sizeof(floating))
        else:
            _pack_t(GH, H, P + m.off[4 * k], base)
            if m.bf16:
                _rounded(base, _panels_size(H, GH), base)
    elif slot == 1:
        _pack_t(GH, H, P + m.off[4 * k + 1], WhhT)
        if m.bf16:
            _rounded(WhhT, _panels_size(H, GH), WhhT)
        memcpy(bias, P + m.off[4 * k + 2], GH * sizeof(floating))
        if m.cell != CELL_GRU and m.off[4 * k + 3] >= 0:  # (min-char-rnn's model has none)
            b_hh = P + m.off[4 * k + 3]
            for i in range(GH):
                bias[i] += b_hh[i]
        memset(bias + GH, 0, (ldg - GH) * sizeof(floating))
    elif grads and (slot == 2 or k > 0):  # BPTT's panels: W_hh's (slot 2), then W_ih's
        dst = bias + ldg + (slot - 2) * size
        _pack(GH, H, P + m.off[4 * k + (1 if slot == 2 else 0)], H, dst)
        if m.bf16:
            _rounded(dst, size, dst)


cdef void _stack_prepare(const StackModel* m, const floating* P, floating* Wt, bint grads,
                         int threads) noexcept nogil:
    # every job of _stack_prepare_job, over `threads` threads (in turn: with two, one takes
    # each layer's W_ih^T and W_hh, the other its W_hh^T and W_ih)
    cdef int j, n = 4 * m.L + 1
    if threads <= 1:
        for j in range(n):
            _stack_prepare_job(m, P, Wt, grads, j)
    else:
        for j in prange(n, num_threads=threads, schedule="static", chunksize=1):
            _stack_prepare_job(m, P, Wt, grads, j)


cdef double _stack_forward(const StackModel* m, const floating* P, const floating* Wt, int B,
                           int b0, int bp, int T, const int* X, const int* Y, const floating* h0,
                           const floating* c0, const floating* masks, floating* pw,
                           const PartLayout* lay) noexcept nogil:
    # forward over rows [b0, b0 + bp) of the chunk (ids X, targets Y (B, T); h0, c0 (L, B, H);
    # masks (L-1, B, T, H) or NULL) into the part's buffers pw; returns the part's summed loss
    cdef Py_ssize_t H = m.H, GH = m.G * H, BH = bp * H, TB = <Py_ssize_t>T * bp
    cdef Py_ssize_t ldg = _transposed_ld(GH), t, b, j
    cdef int k
    cdef floating* hs
    cdef floating* cs = NULL
    cdef floating* acts = NULL
    cdef floating* ghn = NULL
    cdef floating* target
    cdef floating* row
    cdef floating* hp
    cdef floating* hn
    cdef floating* at
    cdef floating* nxt
    cdef floating* gh = pw + lay.gh
    cdef const floating* xin = NULL
    cdef const floating* WihT
    cdef const floating* WhhT
    cdef const floating* bias
    cdef const floating* src
    cdef const floating* mk
    cdef floating* xd
    cdef floating* Z = pw + lay.Z
    for k in range(m.L):
        WihT = Wt + _stack_prep_at(m, k)
        WhhT = _prep_whh_t(m, <floating*>Wt, k)
        bias = WhhT + _panels_size(H, GH)
        hs = pw + lay.hs + k * lay.hs_k
        memcpy(hs, h0 + (k * B + b0) * H, BH * sizeof(floating))
        memset(hs + (T + 1) * BH, 0, WORK_SLACK * sizeof(floating))
        if m.cell == CELL_LSTM:
            cs = pw + lay.cs + k * lay.cs_k
            memcpy(cs, c0 + (k * B + b0) * H, BH * sizeof(floating))
        if m.cell != CELL_RNN:
            acts = pw + lay.acts + k * lay.acts_k
        if m.cell == CELL_GRU:
            ghn = pw + lay.ghn + k * lay.ghn_k
        # the input projection of every step, without the bias (the cell adds it): rnn's
        # straight into hs[1:] (the steps add to it and activate it in place), the gated
        # cells' into acts. Layer 0's rows of W_ih^T, one per character, are gathered step by
        # step just before the step reads them; the other layers' projection is one product
        # over all T*B rows. (A pass that wrote the bias into every row first, or the gathered
        # rows for the whole chunk, cost 3% of a GRU step: each wrote T*B*G*H cold values.)
        target = hs + BH if m.cell == CELL_RNN else acts
        if k > 0:
            _mm_panels(TB, GH, H, _operand(m, xin, TB * H, pw + lay.rh), H, 1, WihT, target,
                       GH, True)
        for t in range(T):
            hp = hs + t * BH
            hn = hp + BH
            at = target + t * bp * GH  # (hn for rnn)
            if k == 0:  # one-hot input: a row of W_ih^T
                for b in range(bp):
                    memcpy(at + b * GH, WihT + X[(b0 + b) * <Py_ssize_t>T + t] * ldg,
                           GH * sizeof(floating))
            ha = _operand(m, hp, BH, pw + lay.rs)  # the recurrent product's operand
            if m.cell == CELL_RNN:
                # W_hh stays in L2 from step to step when it is small; then what the first tile
                # of each row group waits for is its rows of C, the input projection, written
                # long before: the next step's are fetched during this product instead of W's
                # panels (rnn L=3 H=256, one thread: 2% off the whole step)
                nxt = hn + BH if k > 0 and t + 1 < T and \
                    H * H * sizeof(floating) <= L2_RESIDENT_BYTES else NULL
                _mm_panels_pf(bp, H, H, ha, H, 1, WhhT, hn, H, False, nxt, BH)
                _rnn_forward(hn, bp, <int>H, bias, m.relu)
            elif m.cell == CELL_LSTM:
                _mm_panels(bp, GH, H, ha, H, 1, WhhT, at, GH, False)
                _lstm_forward(at, bias, cs + t * BH, cs + (t + 1) * BH, hn, bp, H)
            else:
                _mm_panels(bp, GH, H, ha, H, 1, WhhT, gh, GH, True)
                _gru_forward(at, gh, bias, P + m.off[4 * k + 3], hp, ghn + t * BH, hn, bp, H)
        # the next layer's input: this one's outputs, dropped out by the masks
        xin = hs + BH
        if k < m.L - 1 and masks != NULL:
            xd = pw + lay.xd + k * lay.xd_k
            for t in range(T):
                for b in range(bp):
                    mk = masks + ((k * B + b0 + b) * <Py_ssize_t>T + t) * H
                    src = xin + (t * bp + b) * H
                    row = xd + (t * bp + b) * H
                    for j in range(H):
                        row[j] = src[j] * mk[j]
            memset(xd + TB * H, 0, WORK_SLACK * sizeof(floating))
            xin = xd
    # the head: Z (TB, V) = h_top (TB, H) @ Why^T + by
    src = P + m.off[4 * m.L + 1]
    for t in range(TB):
        memcpy(Z + t * m.V, src, m.V * sizeof(floating))
    _mm(TB, m.V, H, _operand(m, xin, TB * H, pw + lay.rh), H, 1, Wt + _stack_prep_at(m, m.L),
        _transposed_ld(m.V), True, Z, m.V)
    if Y == NULL:
        return 0.0
    return _softmax_xent(Z, m.V, bp, T, Y + <Py_ssize_t>b0 * T)


cdef inline void _colsum(const floating* A, Py_ssize_t rows, Py_ssize_t n,
                         floating* out) noexcept nogil:
    # out (n) += the sum of the rows of A (rows, n), row by row
    cdef Py_ssize_t r, j
    cdef const floating* a
    for r in range(rows):
        a = A + r * n
        for j in range(n):
            out[j] += a[j]


cdef void _stack_backward(const StackModel* m, const floating* P, const floating* Wt, int B,
                          int b0, int bp, int T, const int* X, const floating* masks, floating* pw,
                          const PartLayout* lay, floating* G, floating* dh0,
                          floating* dc0) noexcept nogil:
    # BPTT of the part _stack_forward ran (dZ in Z) into G (cleared: every slot is summed or
    # set here); dh0, dc0 (L, B, H) get the part's rows of dL/d(initial state) when not NULL
    cdef Py_ssize_t H = m.H, V = m.V, GH = m.G * H, BH = bp * H, TB = <Py_ssize_t>T * bp
    cdef Py_ssize_t ldg = _transposed_ld(GH), t, b, j, i
    cdef int k
    cdef const int64_t* off = m.off
    cdef const floating* Z = pw + lay.Z
    cdef const floating* hs
    cdef const floating* hprev
    cdef const floating* xin
    cdef const floating* WhhP
    cdef const floating* mk
    cdef const floating* src
    cdef floating* dH = pw + lay.dH
    cdef floating* dG = pw + lay.dG
    cdef floating* dGh = pw + lay.dGh
    cdef floating* gstep = pw + lay.gh
    cdef floating* carry = pw + lay.carry
    cdef floating* dc = pw + lay.dc
    cdef floating* dXT = pw + lay.dXT
    cdef floating* dh
    cdef floating* dg
    cdef floating* row
    cdef const floating* acts = NULL
    cdef const floating* cs = NULL
    cdef bint pull
    # the head: dWhy (V,H) = dZ^T @ h_top, dby, and dL/dh_top = dZ @ Why
    hs = pw + lay.hs + (m.L - 1) * lay.hs_k
    xin = hs + BH
    if m.bf16:  # dZ and h_top rounded; Why's rounded copy follows the prepared Why^T
        xin = _operand(m, xin, TB * H, pw + lay.rh)
        Z = _operand(m, Z, TB * V, pw + lay.ra)
        src = Wt + _stack_prep_at(m, m.L) + H * _transposed_ld(V)
    else:
        src = P + off[4 * m.L]
    _mm_set(V, H, TB, Z, 1, V, xin, H, True, G + off[4 * m.L], H)
    _colsum(pw + lay.Z, TB, V, G + off[4 * m.L + 1])
    _mm_set(TB, H, V, Z, V, 1, src, H, m.bf16 or m.rd_why, dH, H)
    for k in range(m.L - 1, -1, -1):
        hs = pw + lay.hs + k * lay.hs_k
        WhhP = _prep_whh_t(m, <floating*>Wt, k) + _panels_size(H, GH) + _transposed_ld(GH)
        if m.cell != CELL_RNN:
            acts = pw + lay.acts + k * lay.acts_k
        if m.cell == CELL_LSTM:
            cs = pw + lay.cs + k * lay.cs_k
        memset(carry, 0, BH * sizeof(floating))
        memset(dc, 0, BH * sizeof(floating))
        for t in range(T - 1, -1, -1):
            dh = dH + t * BH
            dg = dG + t * bp * GH
            pull = t > 0 or dh0 != NULL  # dL/dh of the step before is needed
            # each cell adds the carry (dL/dh back through the recurrence) to dh itself
            if m.cell == CELL_RNN:
                _rnn_backward(dh, carry, hs + (t + 1) * BH, dg, BH, m.relu)
                if pull:
                    _mm_panels(bp, H, H, _operand(m, dg, BH, pw + lay.rs), H, 1, WhhP, carry,
                               H, True)
            elif m.cell == CELL_LSTM:
                _lstm_backward(acts + t * bp * GH, cs + t * BH, cs + (t + 1) * BH, dh, carry,
                               dc, dg, bp, <int>H)
                if pull:
                    _mm_panels(bp, H, GH, _operand(m, dg, bp * GH, pw + lay.rs), GH, 1, WhhP,
                               carry, H, True)
            else:
                # the step's dL/d(gh) in the scratch the forward's gh used, its n block kept
                # for dW_hh (a whole (T, bp, 3H) copy of it wrote twice the values cold)
                _gru_backward(acts + t * bp * GH, pw + lay.ghn + k * lay.ghn_k + t * BH,
                              hs + t * BH, dh, carry, dg, gstep, carry, bp, <int>H)
                _colsum(gstep, bp, GH, G + off[4 * k + 3])
                for b in range(bp):
                    memcpy(dGh + (t * bp + b) * H, gstep + b * GH + 2 * H,
                           H * sizeof(floating))
                _mm_panels(bp, H, GH, _operand(m, gstep, bp * GH, pw + lay.rs), GH, 1, WhhP,
                           carry, H, False)
            # the bias gradients while the step's rows are in L1 (a pass over all of dG after
            # the steps read it back from L3)
            _colsum(dg, bp, GH, G + off[4 * k + 2])
        if dh0 != NULL:
            memcpy(dh0 + (k * B + b0) * H, carry, BH * sizeof(floating))
        if dc0 != NULL and m.cell == CELL_LSTM:
            memcpy(dc0 + (k * B + b0) * H, dc, BH * sizeof(floating))
        # the layer's weight gradients, each one product over all T*B rows
        hprev = _operand(m, hs, TB * H, pw + lay.rh)  # each step's h_{t-1}
        if m.cell == CELL_GRU:  # r's and z's rows from dG, n's from dGh
            _mm_set(2 * H, H, TB, _operand(m, dG, TB * GH, pw + lay.ra), 1, GH, hprev, H, True,
                    G + off[4 * k + 1], H)
            _mm_set(H, H, TB, _operand(m, dGh, TB * H, pw + lay.ra), 1, H, hprev, H, True,
                    G + off[4 * k + 1] + 2 * H * H, H)
        else:
            _mm_set(GH, H, TB, _operand(m, dG, TB * GH, pw + lay.ra), 1, GH, hprev, H, True,
                    G + off[4 * k + 1], H)
        if off[4 * k + 3] >= 0 and m.cell != CELL_GRU:  # (min-char-rnn's model has no b_hh)
            memcpy(G + off[4 * k + 3], G + off[4 * k + 2], GH * sizeof(floating))
        if k > 0:
            xin = pw + lay.hs + (k - 1) * lay.hs_k + BH
            if masks != NULL:
                xin = pw + lay.xd + (k - 1) * lay.xd_k
            # dG rounded (again for gru, whose dGh the scratch held)
            dg = <floating*>(_operand(m, dG, TB * GH, pw + lay.ra) if m.cell == CELL_GRU or
                             not m.bf16 else pw + lay.ra)
            _mm_set(GH, H, TB, dg, 1, GH, _operand(m, xin, TB * H, pw + lay.rh), H, True,
                    G + off[4 * k], H)
            # dL/d(the layer below's output), through its dropout mask
            _mm_panels(TB, H, GH, dg, GH, 1, WhhP + _panels_size(GH, H), dH, H, True)
            if masks != NULL:
                for t in range(T):
                    for b in range(bp):
                        mk = masks + (((k - 1) * B + b0 + b) * <Py_ssize_t>T + t) * H
                        row = dH + (t * bp + b) * H
                        for j in range(H):
                            row[j] *= mk[j]
        else:  # one-hot input: row x of dW_ih^T gets the step's dG row
            memset(dXT, 0, V * ldg * sizeof(floating))
            for t in range(T):
                for b in range(bp):
                    row = dXT + X[(b0 + b) * <Py_ssize_t>T + t] * ldg
                    src = dG + (t * bp + b) * GH
                    for j in range(GH):
                        row[j] += src[j]
            _transpose(V, GH, dXT, ldg, G + off[0], V)


cdef double _stack_run_part(const StackModel* m, const floating* P, int B, int T, const int* X,
                            const int* Y, const floating* h0, const floating* c0,
                            const floating* masks, floating* work, floating* G, floating* dh0,
                            floating* dc0, int parts, int p) noexcept nogil:
    # part p of the chunk: forward and (G not NULL) BPTT into G (part 0) or its own buffer
    cdef int b0 = _part_start(B, parts, p), bp = _part_start(B, parts, p + 1) - b0
    cdef PartLayout lay
    cdef floating* pw = work + _stack_part_at(m, B, T, parts, p)
    cdef floating* Gp
    cdef double loss
    _part_layout(m, bp, T, &lay)
    loss = _stack_forward(m, P, work, B, b0, bp, T, X, Y, h0, c0, masks, pw, &lay)
    if G != NULL:
        Gp = G if p == 0 else work + _stack_part_at(m, B, T, parts, parts) + \
            (p - 1) * _padded(m.n)
        memset(Gp, 0, m.n * sizeof(floating))
        _stack_backward(m, P, work, B, b0, bp, T, X, masks, pw, &lay, Gp, dh0, dc0)
    return loss


cdef double _stack_chunk(const StackModel* m, const floating* P, int B, int T, const int* X,
                         const int* Y, const floating* h0, const floating* c0,
                         const floating* masks, floating* work, floating* G, floating* dh0,
                         floating* dc0, int parts) noexcept nogil:
    # forward over a (B, T) chunk, and BPTT into G when it is not NULL; returns the summed loss
    # (0 without Y). The states after the last step stay in work (_stack_last_state).
    cdef double losses[MAX_PARTS]
    cdef double loss = 0.0
    cdef Py_ssize_t n = m.n, i, i0, i1, blk, n_blk
    cdef int p, q
    cdef floating* extra = work + _stack_part_at(m, B, T, parts, parts)
    cdef floating* Gp
    _stack_prepare(m, P, work, G != NULL, parts)
    if parts == 1:
        losses[0] = _stack_run_part(m, P, B, T, X, Y, h0, c0, masks, work, G, dh0, dc0, 1, 0)
    else:
        for p in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            losses[p] = _stack_run_part(m, P, B, T, X, Y, h0, c0, masks, work, G, dh0, dc0,
                                        parts, p)
    for p in range(parts):
        loss += losses[p]
    if G != NULL and parts > 1:  # the parts' gradients summed into G, in part order
        n_blk = (n + 4095) // 4096
        for blk in prange(n_blk, num_threads=parts, schedule="static"):
            i0 = blk * 4096
            i1 = min(i0 + 4096, n)
            for q in range(1, parts):
                Gp = extra + (q - 1) * _padded(n)
                for i in range(i0, i1):
                    G[i] += Gp[i]
    return loss


cdef void _stack_last_state(const StackModel* m, const floating* work, int B, int T, int parts,
                            floating* h, floating* c) noexcept nogil:
    # each part's states after the last step into its rows of h and c (L, B, H; c lstm only)
    cdef int p, k, b0, bp
    cdef PartLayout lay
    cdef const floating* pw
    cdef Py_ssize_t BH, H = m.H
    for p in range(parts):
        b0 = _part_start(B, parts, p)
        bp = _part_start(B, parts, p + 1) - b0
        BH = bp * H
        _part_layout(m, bp, T, &lay)
        pw = work + _stack_part_at(m, B, T, parts, p)
        for k in range(m.L):
            memcpy(h + (k * B + b0) * H, pw + lay.hs + k * lay.hs_k + T * BH,
                   BH * sizeof(floating))
            if c != NULL and m.cell == CELL_LSTM:
                memcpy(c + (k * B + b0) * H, pw + lay.cs + k * lay.cs_k + T * BH,
                       BH * sizeof(floating))
