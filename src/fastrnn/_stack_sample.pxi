# Sampling from a stacked model (included by _kernels.pyx): one sequence, one character at a
# time, by the id rule of the vanilla `generate` (see _kernels.pxd) on the stack's step.
#
# A character is a handful of matrix-vector products (dot products on the weights in place,
# _mv): per layer the recurrent one (and, above layer 0, the input one), then the head. Layer
# 0's input is a row of its W_ih^T, gathered from a transposed copy made once per call with the
# biases already added. The work buffer (stack_sample_work_size):
#   WihT0 (V, ldg) | gx (ldg) | gh (ldg) | ghn (ldg) | z (Vp) | cum (V doubles, 64-byte line)


cdef inline Py_ssize_t _stack_sample_work(int H, int V, int G) noexcept nogil:
    cdef Py_ssize_t ldg = _transposed_ld(<Py_ssize_t>G * H)
    return (V + 3) * ldg + _padded(V) + 2 * _padded(V) + 16


cdef int _pick_id(floating* z, int V, floating temperature, bint greedy, int top_k,
                  double top_p, double u, int* order, double* cum) noexcept nogil:
    # the id `generate` draws from logits z (overwritten): the argmax when greedy; else the
    # inverse CDF of the tempered masses, after top-k / top-p filtering
    cdef floating m = _highest(z, V)
    cdef Py_ssize_t v, n_le
    cdef int j, n_rank, n_keep, idx
    cdef double c, kept, target
    cdef bint filtered = (0 < top_k < V) or top_p < 1
    if greedy:
        for v in range(V):
            if z[v] == m:
                return <int>v
        return 0
    n_rank = top_k if 0 < top_k < V else V
    if filtered:
        _rank_top(z, V, n_rank, order)
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
    idx = V - 1  # rounding left no id above the target: the last one with mass
    for v in range(V - 1, -1, -1):
        if z[v] > 0:
            idx = <int>v
            break
    return idx


cdef void _stack_generate(const StackModel* m, const floating* P, floating* h, floating* c,
                          Py_ssize_t n, const double* u, floating temperature, bint greedy,
                          int top_k, double top_p, int* out, floating* work,
                          int* order) noexcept nogil:
    # n ids from state h, c (L, H; c lstm only), updated in place
    cdef Py_ssize_t H = m.H, V = m.V, GH = m.G * H, ldg = _transposed_ld(GH), i, k
    cdef int L = m.L, layer, idx
    cdef const int64_t* off = m.off
    cdef floating* WihT0 = work
    cdef floating* gx = work + V * ldg
    cdef floating* gh = gx + ldg
    cdef floating* ghn = gh + ldg
    cdef floating* z = ghn + ldg
    cdef double* cum = <double*>((<size_t>(z + _padded(V)) + 63) & ~(<size_t>63))
    cdef const floating* b_ih
    cdef const floating* b_hh
    cdef const floating* x
    cdef floating* hk
    _transpose(GH, V, P + off[0], V, WihT0, ldg)
    b_ih = P + off[2]
    b_hh = P + off[3]
    for k in range(V):
        for i in range(GH):
            WihT0[k * ldg + i] += b_ih[i] + (b_hh[i] if m.cell != CELL_GRU else 0)
    for k in range(n):
        hk = h + (L - 1) * H
        memcpy(z, P + off[4 * L + 1], V * sizeof(floating))
        _mv(V, H, P + off[4 * L], H, m.rd_why, hk, z)
        idx = _pick_id(z, <int>V, temperature, greedy, top_k, top_p,
                       u[k] if not greedy else 0.0, order, cum)
        out[k] = idx
        x = WihT0 + idx * ldg
        for layer in range(L):
            hk = h + layer * H
            b_ih = P + off[4 * layer + 2]
            b_hh = P + off[4 * layer + 3]
            if layer == 0:
                memcpy(gx, x, GH * sizeof(floating))
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
