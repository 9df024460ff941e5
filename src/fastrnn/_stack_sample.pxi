# Sampling from a stacked model (included by _hot.pyx): one sequence, one character at a
# time, by the id rule of the vanilla `generate` (see _hot.pxd) on the stack's step.
#
# A character is a handful of matrix-vector products (dot products on the weights in place,
# _mv): per layer the recurrent one (and, above layer 0, the input one), then the head; with
# threads, each thread takes a slice of every product's rows (_stack_generate_team). Layer 0's
# input is a row of its W_ih^T, gathered from a transposed copy made once per call with the
# biases already added. The work buffer (stack_sample_work_size):
#   WihT0 (V, ldg) | gx (ldg) | gh (ldg) | ghn (ldg) | z (Vp) | cum (V doubles, 64-byte line)


cdef inline Py_ssize_t _stack_sample_work(int H, int V, int G) noexcept nogil:
    cdef Py_ssize_t ldg = _transposed_ld(<Py_ssize_t>G * H)
    return (V + 3) * ldg + _padded(V) + 2 * _padded(V) + 16


cdef void _stack_generate_team(const StackModel* m, const floating* P, floating* h,
                               floating* c, Py_ssize_t n, const double* u,
                               floating temperature, bint greedy, int top_k, double top_p,
                               int* out, floating* work, int* order, int* shared_id,
                               Py_ssize_t* stopped) noexcept nogil:
    # Run by every thread of a team (or by one, alone): each draws its slice of every layer's
    # gate rows (the rows of units [j0, j1) in each gate block: memory-bound dot products, so a
    # second core reading its half of the weights from its own side of the caches doubles the
    # bandwidth), the first thread takes the head, the id and the cells, and all meet at a
    # barrier after each. A row's dot product is the same whichever thread takes it: the ids
    # do not depend on the number of threads.
    cdef Py_ssize_t H = m.H, V = m.V, GH = m.G * H, ldg = _transposed_ld(GH), i, k, r0, nr
    cdef int L = m.L, layer, g, nt = fr_team_size(), rank = fr_team_rank()
    cdef Py_ssize_t j0 = _slice(H, nt, rank), j1 = _slice(H, nt, rank + 1)
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
    nr = j1 - j0
    for k in range(n):
        if rank == 0:
            memcpy(z, P + off[4 * L + 1], V * sizeof(floating))
            _mv(V, H, P + off[4 * L], H, m.rd_why, h + (L - 1) * H, z)
            shared_id[0] = _pick_id(z, <int>V, temperature, greedy, top_k, top_p,
                                    u[k] if not greedy else 0.0, order, cum)
            if shared_id[0] >= 0:
                out[k] = shared_id[0]
        fr_barrier()
        if shared_id[0] < 0:  # NaN logits: every thread stops at this character
            stopped[0] = k
            return
        x = WihT0 + shared_id[0] * ldg
        for layer in range(L):
            hk = h + layer * H
            b_ih = P + off[4 * layer + 2]
            b_hh = P + off[4 * layer + 3]
            for g in range(m.G):
                r0 = g * H + j0
                if nr <= 0:
                    break
                if layer == 0:
                    memcpy(gx + r0, x + r0, nr * sizeof(floating))
                else:
                    for i in range(r0, r0 + nr):
                        gx[i] = b_ih[i] + (b_hh[i] if m.cell != CELL_GRU else 0)
                    _mv(nr, H, P + off[4 * layer] + r0 * H, H, m.rd_ih[layer], x, gx + r0)
                if m.cell == CELL_GRU:
                    memcpy(gh + r0, b_hh + r0, nr * sizeof(floating))
                    _mv(nr, H, P + off[4 * layer + 1] + r0 * H, H, m.rd_hh[layer], hk, gh + r0)
                else:
                    _mv(nr, H, P + off[4 * layer + 1] + r0 * H, H, m.rd_hh[layer], hk, gx + r0)
            fr_barrier()  # the gates are complete, and no thread reads the old state any more
            if rank == 0:
                if m.cell == CELL_GRU:
                    _gru_forward(gx, gh, NULL, NULL, hk, ghn, hk, 1, <int>H)
                elif m.cell == CELL_RNN:
                    memcpy(hk, gx, H * sizeof(floating))
                    _rnn_forward(hk, 1, <int>H, NULL, m.relu)
                else:
                    _lstm_forward(gx, NULL, c + layer * H, c + layer * H, hk, 1, <int>H)
            fr_barrier()
            x = hk


cdef Py_ssize_t _stack_generate(const StackModel* m, const floating* P, floating* h,
                                floating* c, Py_ssize_t n, const double* u,
                                floating temperature, bint greedy, int top_k, double top_p,
                                int* out, floating* work, int* order,
                                int threads) noexcept nogil:
    # n ids from state h, c (L, H; c lstm only), updated in place, on `threads` threads; returns
    # -1, or the character at which the logits held a NaN (the ids before it are in out)
    cdef Py_ssize_t GH = m.G * m.H, ldg = _transposed_ld(GH), i, k
    cdef const floating* b_ih = P + m.off[2]
    cdef const floating* b_hh = P + m.off[3]
    cdef int shared_id = 0
    cdef Py_ssize_t stopped = -1
    _transpose(GH, m.V, P + m.off[0], m.V, work, ldg)  # rows of W_ih_l0^T, biases added
    for k in range(m.V):
        for i in range(GH):
            work[k * ldg + i] += b_ih[i] + (b_hh[i] if m.cell != CELL_GRU else 0)
    if threads == 1:
        _stack_generate_team(m, P, h, c, n, u, temperature, greedy, top_k, top_p, out, work,
                             order, &shared_id, &stopped)
    else:
        with parallel(num_threads=threads):
            _stack_generate_team(m, P, h, c, n, u, temperature, greedy, top_k, top_p, out,
                                 work, order, &shared_id, &stopped)
    return stopped
