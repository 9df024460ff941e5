# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
# ---------------------------------------------------------------------------------------------
# A chunk split over threads. The B rows of a chunk are independent sequences until their
# gradients are summed, so `parts` groups of consecutive rows run forward and BPTT on their own
# threads (OpenMP), each with its own slice of the work buffer and, but for the first, its own
# gradient buffer; the gradients are then summed in a fixed order. Nothing is shared while the
# parts run: no locks, and the same parts give the same result whichever thread runs them.

cdef enum:
    MAX_PARTS = 64
    MIN_PART_WORK = 1 << 20  # multiply-adds of a part's step below which splitting costs more
    SPLIT_MIN_H = 512        # one sequence is split over threads from this H on (_one_sequence)
    SLICE_MIN_H = 256        # into slices of at least this many hidden units

cdef inline Py_ssize_t _n_params(Py_ssize_t H, Py_ssize_t V) noexcept nogil:
    return 2 * H * V + H * H + H + V


cdef inline Py_ssize_t _chunk_work(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
                                   Py_ssize_t V) noexcept nogil:
    # work of one part, B rows of a chunk: hs and slack, Z, dH (a block of steps plus a carried
    # (B,H)), the input weights' gradient transposed (V,H) and a vector of H padded to whole
    # vectors (_rowsum_into in backward)
    return (T + 1) * B * H + WORK_SLACK + T * B * V + (_block_steps(B, T, H, V) + 1) * B * H + \
        V * H + _padded(H)


cdef inline int _n_parts(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H, Py_ssize_t V,
                         int threads) noexcept nogil:
    # as many parts as threads, each at least one row and MIN_PART_WORK multiply-adds; one
    # sequence: as many slices of the hidden units as threads, each SLICE_MIN_H or more (and none
    # below SPLIT_MIN_H)
    cdef Py_ssize_t per_row = T * H * (H + V), rows = B
    if B == 1:
        if H < SPLIT_MIN_H:
            return 1
        return <int>max(<Py_ssize_t>1, min(<Py_ssize_t>min(threads, MAX_PARTS), H // SLICE_MIN_H))
    if per_row > 0:
        rows = max(<Py_ssize_t>1, MIN_PART_WORK // per_row)
    return <int>max(<Py_ssize_t>1, min(<Py_ssize_t>min(threads, MAX_PARTS), B // rows))


cdef inline int _part_start(int B, int parts, int p) noexcept nogil:
    # part p holds rows [_part_start(p), _part_start(p + 1)): consecutive, sizes differing by
    # at most one
    return p * (B // parts) + min(p, B % parts)


cdef inline floating* _part_work(floating* work, int B, int T, int H, int V, int parts,
                                 int p) noexcept nogil:
    # the work buffer: the padded weight copies (_prepare), shared by all parts; each part's
    # slice; the gradients of parts 1, 2, ...
    cdef Py_ssize_t off = _prepared_size(H, V)
    cdef int q
    for q in range(p):
        off += _chunk_work(_part_start(B, parts, q + 1) - _part_start(B, parts, q), T, H, V)
    return work + off


# One sequence (B=1) split over threads. Its time steps depend on each other, so a team of
# threads takes each step together, every thread (rank) working on `parts` slices of the hidden
# units, and all meet at a barrier (fr_barrier) before the next step. A slice owns its rows of
# Whh and works on nothing else: forward, it computes h_t[slice] from them; BPTT, it sends
# dh[slice] back through them into every unit (a partial sum of Whh^T dh), and at the next step
# each slice adds up the partial sums for its own units; its rows of dWhh come from its columns
# of dH. Each core thus reads only its rows of Whh (half of it on two threads), in both passes,
# and they stay in its own L2 cache: one thread streamed all of Whh once per step from L2 at
# H=512. The forward products of a slice are those of the one-thread path restricted to its rows
# (slices start at multiples of 16, so they are the same sums); BPTT's partial sums, the output
# layer and the weight gradients split into row blocks sum in a different order than one product
# does, so results depend on `parts` (not on how many threads run them).

cdef extern from "_adagrad.h" nogil:
    const int FR_ADAGRAD_FAST
    void fr_adagrad_f32(float* P, const float* G, float* M, Py_ssize_t n, float sc, int do_clip,
                        float clip, float lr, float eps)
    int fr_adagrad_guarded_f32(float* P, float* G, float* M, float* U, Py_ssize_t n, float sc,
                               int do_clip, float clip, float lr, float eps)

cdef extern from "_team.h" nogil:
    int fr_team_size()
    int fr_team_rank()
    void fr_barrier()


cdef inline Py_ssize_t _slice(Py_ssize_t n, int parts, int s) noexcept nogil:
    # slice s of range(n) in `parts` slices starts here: at a multiple of 16 (n for s == parts)
    return min(n, (n * s // parts + 15) // 16 * 16)


cdef inline int _mine(int parts, int rank, int nt) noexcept nogil:
    # how many of the slices rank, rank + nt, rank + 2*nt, ... below parts a thread takes
    return (parts - rank + nt - 1) // nt if rank < parts else 0


cdef inline Py_ssize_t _share(Py_ssize_t n, int parts, int s) noexcept nogil:
    # share s of range(n) in `parts` nearly equal shares starts here
    return n * s // parts


cdef inline void _add_partials(floating* y, const floating* pulls, Py_ssize_t Hp, int parts,
                               Py_ssize_t i0, Py_ssize_t i1) noexcept nogil:
    # y[i0:i1] += the sum of the `parts` vectors at pulls, Hp apart (added in slice order)
    cdef Py_ssize_t i
    cdef int q
    cdef floating acc
    for i in range(i0, i1):
        acc = pulls[i]
        for q in range(1, parts):
            acc = acc + pulls[q * Hp + i]
        y[i] += acc


cdef void _one_sequence(const floating* P, int H, int V, int T, const int* X, const int* Y,
                        floating* work, floating* G, floating* dh0, int parts,
                        double* losses, const UpdateConfig* cfg, floating* M, floating* S,
                        bint guarded, floating* U, double* sums, int* bad) noexcept nogil:
    # Run by every thread of a team: the forward pass of a (1,T) chunk whose state h0 is in
    # hs[0], then (G not NULL) BPTT into G, as forward and backward do for B=1. Buffers as for
    # one part (_chunk_work), whose last vector of _padded(H) values is followed by 2 * parts - 1
    # more (the slices' partial sums, by parity of t); Why is already transposed (_prepare).
    # losses[s]: the loss of slice s's share of the time steps. With cfg (not NULL), each slice
    # then takes the optimizer step on the parameters it owns (_owned, _update_team: M, S, U,
    # sums, bad as there); guarded, none does when the chunk's loss is not finite.
    cdef int nt = fr_team_size(), rank = fr_team_rank(), s, j
    cdef Py_ssize_t HV = <Py_ssize_t>H * V, n = _n_params(H, V), i0, i1, r0, r1, t, t0, t1, i, v
    cdef Py_ssize_t steps = _block_steps(1, T, H, V), ldv = _transposed_ld(V)
    cdef const floating* Wxh = P
    cdef const floating* Whh = P + HV
    cdef const floating* Why = Whh + <Py_ssize_t>H * H
    cdef const floating* bh = Why + HV
    cdef const floating* by = bh + H
    cdef const floating* WhyT = work + H * _transposed_ld(H)
    cdef floating* hs = work + _prepared_size(H, V)
    cdef floating* Z = hs + (T + 1) * <Py_ssize_t>H + WORK_SLACK
    cdef floating* dH = Z + <Py_ssize_t>T * V
    cdef floating* dXT = dH + (steps + 1) * H  # (after a carried vector, unused here)
    cdef Py_ssize_t Hp = _padded(H)
    cdef floating* pulls = dXT + HV  # 2 * parts vectors of Hp: each slice's pull, by parity of t
    cdef floating* pull
    cdef floating* dWhh = G + HV
    cdef floating* dWhy = dWhh + <Py_ssize_t>H * H
    cdef floating* dbh = dWhy + HV
    cdef floating* dby = dbh + H
    cdef floating* row
    cdef floating* col
    cdef floating* dh
    cdef const floating* h
    cdef bint tail = _tail_whh(H, V)
    cdef double total
    if G != NULL:  # the sums cleared here (the weight gradients are set by _mm_set and dWxh
        # from dXT); the forward pass's barriers come before any use
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
            memset(dbh + i0, 0, (i1 - i0) * sizeof(floating))
            r0, r1 = _share(V, parts, s), _share(V, parts, s + 1)
            memset(dby + r0, 0, (r1 - r0) * sizeof(floating))
            i0 = _slice(HV, parts, s)
            memset(dXT + i0, 0, (_slice(HV, parts, s + 1) - i0) * sizeof(floating))

    # forward: h_t[slice] = tanh(Wxh[slice, x_t] + bh[slice] + Whh[slice, :] @ h_(t-1))
    for t in range(T):
        row = hs + (t + 1) * H
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
            for i in range(i0, i1):
                row[i] = Wxh[i * V + X[t]] + bh[i]
            _mv(i1 - i0, H, Whh + i0 * H, H, tail, hs + t * H, row + i0)
            _tanh_inplace(row + i0, i1 - i0)
        fr_barrier()
    # logits and loss, a share of the time steps each
    for j in range(_mine(parts, rank, nt)):
        s = rank + j * nt
        r0, r1 = _share(T, parts, s), _share(T, parts, s + 1)
        for t in range(r0, r1):
            memcpy(Z + t * V, by, V * sizeof(floating))
        _mm(r1 - r0, V, H, hs + (r0 + 1) * H, H, 1, WhyT, ldv, True, Z + r0 * V, V)
        losses[s] = _softmax_xent(Z + r0 * V, V, 1, <int>(r1 - r0), Y + r0) if Y != NULL else 0.0
    if G == NULL:
        return
    fr_barrier()

    # output layer: dWhy (V,H) = dZ^T @ hs[1:], dby; a share of the V rows each
    for j in range(_mine(parts, rank, nt)):
        s = rank + j * nt
        r0, r1 = _share(V, parts, s), _share(V, parts, s + 1)
        _mm_set(r1 - r0, H, T, Z + r0, 1, V, hs + H, H, True, dWhy + r0 * H, H)
        for v in range(r0, r1):
            for t in range(T):
                dby[v] += Z[t * V + v]
    t1 = T
    while t1 > 0:  # blocks of steps [t0, t1), newest first (see backward)
        t0 = max(t1 - steps, 0)
        for j in range(_mine(parts, rank, nt)):  # dL/dh from the outputs: a share of the steps each
            s = rank + j * nt
            r0, r1 = t0 + _share(t1 - t0, parts, s), t0 + _share(t1 - t0, parts, s + 1)
            _mm_set(r1 - r0, H, V, Z + r0 * V, V, 1, Why, H, _tail_why(H, V),
                    dH + (r0 - t0) * H, H)
        fr_barrier()
        for t in range(t1 - 1, t0 - 1, -1):
            dh = dH + (t - t0) * H
            h = hs + (t + 1) * H
            for j in range(_mine(parts, rank, nt)):
                s = rank + j * nt
                i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
                # this step's dL/dh[slice]: the outputs' share, plus the pull of step t + 1
                # through Whh, summed over the slices' partial sums (a fixed order)
                if t + 1 < T:
                    _add_partials(dh, pulls + ((t + 1) & 1) * parts * Hp, Hp, parts, i0, i1)
                for i in range(i0, i1):
                    dh[i] = dh[i] * (<floating>1 - h[i] * h[i])
                # its pull through the slice's rows of Whh, into every unit: dh[slice] @
                # Whh[slice, :] (rows followed by Why: readable to Hp)
                if t > 0 or dh0 != NULL:
                    pull = pulls + ((t & 1) * parts + s) * Hp
                    memset(pull, 0, Hp * sizeof(floating))
                    _rowsum(Hp, i1 - i0, Whh + i0 * H, H, dh + i0, pull)
            fr_barrier()
        # the block's weight gradients, by slice: its rows of dWhh, its columns of dbh and dXT
        # (each reads only the slice's columns of dH, written by this thread)
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
            if t1 == T:
                _mm_set(i1 - i0, H, t1 - t0, dH + i0, 1, H, hs + t0 * H, H, True,
                        dWhh + i0 * H, H)
            else:
                _mm(i1 - i0, H, t1 - t0, dH + i0, 1, H, hs + t0 * H, H, True, dWhh + i0 * H, H)
            for t in range(t0, t1):
                row = dH + (t - t0) * H
                col = dXT + X[t] * <Py_ssize_t>H
                for i in range(i0, i1):
                    dbh[i] += row[i]
                    col[i] += row[i]
        fr_barrier()  # before the next block writes dH
        t1 = t0
    if dh0 != NULL:
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
            memset(dh0 + i0, 0, (i1 - i0) * sizeof(floating))
            _add_partials(dh0, pulls, Hp, parts, i0, i1)
    for j in range(_mine(parts, rank, nt)):  # the slice's rows of dWxh: its columns of dXT^T
        s = rank + j * nt
        i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
        _transpose(V, i1 - i0, dXT + i0, H, G + i0 * V, V)
    if cfg == NULL:
        return
    # Each gradient a slice owns is final now, and no other slice reads those parameters any
    # more (Why, which all read, last before the barrier after dL/dh of the outputs)
    if guarded:
        total = 0.0
        for s in range(parts):  # the order _chunk sums them in
            total += losses[s]
        if not (total - total == 0):
            return
    _update_team(<floating*>P, G, M, S, n, H, V, 1, parts, cfg, guarded, U, sums, bad)


cdef double _run_part(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                      const floating* h, floating* work, floating* G, floating* dh0, int parts,
                      int p) noexcept nogil:
    # part p of a chunk split into `parts` groups of rows (see _chunk): forward from its rows of
    # h, and BPTT into G (part 0) or its own gradient buffer; returns its summed loss
    cdef Py_ssize_t n = _n_params(H, V)
    cdef int b0 = _part_start(B, parts, p), bp = _part_start(B, parts, p + 1) - b0
    cdef floating* hs = _part_work(work, B, T, H, V, parts, p)
    cdef floating* Z = hs + (T + 1) * <Py_ssize_t>bp * H + WORK_SLACK
    cdef floating* dH = Z + <Py_ssize_t>T * bp * V
    cdef double loss
    cdef bint split = _split_whh(B, H)  # as _chunk prepared work
    memcpy(hs, h + <Py_ssize_t>b0 * H, <Py_ssize_t>bp * H * sizeof(floating))
    loss = forward(P, H, V, bp, T, X + <Py_ssize_t>b0 * T,
                   Y + <Py_ssize_t>b0 * T if Y != NULL else NULL, work, split, hs, Z)
    if G != NULL:
        if split:
            _whh_rows(P, H, V, work)
        backward(P, H, V, bp, T, X + <Py_ssize_t>b0 * T, work, split, hs, Z, dH,
                 G if p == 0 else _part_work(work, B, T, H, V, parts, parts) + (p - 1) * n,
                 dh0 + <Py_ssize_t>b0 * H if dh0 != NULL else NULL,
                 dH + (_block_steps(bp, T, H, V) + 1) * <Py_ssize_t>bp * H)
    return loss


cdef double _chunk(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                   const floating* h, floating* work, floating* G, floating* dh0,
                   int parts, const UpdateConfig* cfg, floating* M, floating* S, bint guarded,
                   floating* U, int* bad) noexcept nogil:
    # Forward over a (B,T) chunk from state h, and BPTT into G (not NULL) too; each part's
    # states, logits and gradients stay in its slice of work (_part_work), and G ends as their
    # sum. Returns the summed loss (0 without Y). cfg (not NULL) only for one sequence split
    # over threads: its team then takes the optimizer step too (_one_sequence), bad[s] telling
    # whether slice s's left a non-finite value (guarded; then all were undone).
    cdef double losses[MAX_PARTS]
    cdef double sums[MAX_PARTS]
    cdef double loss = 0.0
    cdef Py_ssize_t n = _n_params(H, V), i, i0, i1, blk, n_blk
    cdef int p, q
    cdef floating* hs
    cdef floating* Gp
    cdef floating* extra = _part_work(work, B, T, H, V, parts, parts)  # gradients of parts 1, ...
    if B == 1 and parts > 1:  # one sequence: its hidden units split over a team
        hs = work + _prepared_size(H, V)
        memcpy(hs, h, H * sizeof(floating))
        memset(hs + (T + 1) * <Py_ssize_t>H, 0, WORK_SLACK * sizeof(floating))
        _prepare(P, H, V, 1, False, work)
        with parallel(num_threads=parts):
            _one_sequence(P, H, V, T, X, Y, work, G, dh0, parts, losses, cfg, M, S, guarded, U,
                          sums, bad)
        for p in range(parts):
            loss += losses[p]
        return loss
    _prepare(P, H, V, _part_start(B, parts, 1), _split_whh(B, H), work)
    if parts == 1:  # no thread team to start (it cost a microsecond or two per call)
        losses[0] = _run_part(P, H, V, B, T, X, Y, h, work, G, dh0, 1, 0)
    else:
        for p in prange(parts, num_threads=parts, schedule="static", chunksize=1):
            losses[p] = _run_part(P, H, V, B, T, X, Y, h, work, G, dh0, parts, p)
    for p in range(parts):
        loss += losses[p]
    if G != NULL and parts > 1:
        n_blk = (n + 4095) // 4096
        for blk in prange(n_blk, num_threads=parts, schedule="static"):
            i0 = blk * 4096
            i1 = min(i0 + 4096, n)
            for q in range(1, parts):
                Gp = extra + (q - 1) * n
                for i in range(i0, i1):
                    G[i] += Gp[i]
    return loss


cdef void _last_state(const floating* work, int H, int V, int B, int T, int parts,
                      floating* h) noexcept nogil:
    # copies each part's state after the chunk's last step into its rows of h (B,H)
    cdef int p, b0, bp
    cdef const floating* hs
    if B == 1:
        parts = 1  # (one sequence split over threads keeps one part's buffers)
    for p in range(parts):
        b0 = _part_start(B, parts, p)
        bp = _part_start(B, parts, p + 1) - b0
        hs = _part_work(<floating*>work, B, T, H, V, parts, p)
        memcpy(h + <Py_ssize_t>b0 * H, hs + <Py_ssize_t>T * bp * H,
               <Py_ssize_t>bp * H * sizeof(floating))
