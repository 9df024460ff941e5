# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
cdef inline floating _clipped(floating g, bint do_clip, floating clip) noexcept nogil:
    if do_clip:
        if g > clip:
            return clip
        if g < -clip:
            return -clip
    return g


cdef inline floating* _at(floating* p, Py_ssize_t i) noexcept nogil:
    # p + i, or NULL for an optimizer state buffer not in use
    return p + i if p != NULL else NULL


cdef inline double _sumsq(const floating* G, Py_ssize_t n, double grad_scale) noexcept nogil:
    # the squared L2 norm of G * grad_scale, summed in order in double
    cdef Py_ssize_t i
    cdef double acc = 0.0, gs
    for i in range(n):
        gs = G[i] * grad_scale
        acc += gs * gs
    return acc


cdef inline double _norm_scale(const UpdateConfig* cfg, double norm) noexcept nogil:
    # the factor every gradient element is multiplied by before clipping, given the L2 norm of
    # G * grad_scale (clip_norm on): the rescaling of torch's clip_grad_norm_
    if cfg.clip_norm > 0 and cfg.clip_norm / (norm + 1e-6) < 1:
        return cfg.grad_scale * (cfg.clip_norm / (norm + 1e-6))
    return cfg.grad_scale


cdef void _apply(floating* P, const floating* G, floating* M, floating* S, Py_ssize_t n,
                 const UpdateConfig* cfg, double scale) noexcept nogil:
    # the optimizer step of `update` on n elements, each gradient first multiplied by scale
    cdef Py_ssize_t i
    cdef floating sc = <floating>scale, clip = <floating>cfg.clip
    cdef floating lr = <floating>cfg.lr, eps = <floating>cfg.eps
    cdef floating b1 = <floating>cfg.beta1, b2 = <floating>cfg.beta2
    cdef floating c1 = <floating>(1.0 - cfg.beta1), c2 = <floating>(1.0 - cfg.beta2)
    cdef floating bc1 = <floating>(1.0 - cfg.beta1 ** cfg.step)
    cdef floating bc2 = <floating>(1.0 - cfg.beta2 ** cfg.step)
    cdef floating g
    cdef bint do_clip = cfg.do_clip
    # one loop per optimizer, so each is a plain loop the compiler can vectorise
    if cfg.optimizer == OPT_ADAGRAD:
        if floating is float:
            if FR_ADAGRAD_FAST:  # 1/sqrt from a refined estimate (_adagrad.h)
                fr_adagrad_f32(P, G, M, n, sc, do_clip, clip, lr, eps)
                return
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            M[i] += g * g
            P[i] -= lr * g / _sqrt(M[i] + eps)
    elif cfg.optimizer == OPT_SGD:
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            P[i] -= lr * g
    elif cfg.optimizer == OPT_RMSPROP:
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            M[i] = b2 * M[i] + c2 * (g * g)
            P[i] -= lr * g / (_sqrt(M[i]) + eps)
    elif cfg.optimizer == OPT_ADAM:
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            M[i] = b1 * M[i] + c1 * g
            S[i] = b2 * S[i] + c2 * (g * g)
            P[i] -= lr * (M[i] / bc1) / (_sqrt(S[i] / bc2) + eps)


cdef double update(floating* P, const floating* G, floating* M, floating* S, Py_ssize_t n,
                   const UpdateConfig* cfg) noexcept nogil:
    cdef double norm = sqrt(_sumsq(G, n, cfg.grad_scale)) if cfg.clip_norm > 0 else -1.0
    _apply(P, G, M, S, n, cfg, _norm_scale(cfg, norm))
    return norm


cdef bint _apply_guarded(floating* P, floating* G, floating* M, floating* S, Py_ssize_t n,
                         const UpdateConfig* cfg, double scale, floating* U,
                         floating* US) noexcept nogil:
    # `_apply` (the same operations in the same order, so the same results), saving as it goes
    # each element's old value of P into G (whose gradient has just been used) and those of M
    # and S into U and US; returns whether any new value of P, M or S is not finite (then
    # _restore puts them back). No extra pass over memory (but for Adam): the saves go to cache
    # lines the loop touches anyway, or to one stream. A finite x has x - x == 0; NaN and +-inf
    # give NaN (no -ffast-math here, so the compiler keeps the test).
    cdef Py_ssize_t i
    cdef floating sc = <floating>scale, clip = <floating>cfg.clip
    cdef floating lr = <floating>cfg.lr, eps = <floating>cfg.eps
    cdef floating b1 = <floating>cfg.beta1, b2 = <floating>cfg.beta2
    cdef floating c1 = <floating>(1.0 - cfg.beta1), c2 = <floating>(1.0 - cfg.beta2)
    cdef floating bc1 = <floating>(1.0 - cfg.beta1 ** cfg.step)
    cdef floating bc2 = <floating>(1.0 - cfg.beta2 ** cfg.step)
    cdef floating g, p, m, v
    cdef bint do_clip = cfg.do_clip
    cdef int bad = 0
    if cfg.optimizer == OPT_ADAGRAD:
        if floating is float:
            if FR_ADAGRAD_FAST:  # the same as _apply's (_adagrad.h)
                return fr_adagrad_guarded_f32(P, G, M, U, n, sc, do_clip, clip, lr, eps) != 0
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            m = M[i] + g * g
            p = P[i] - lr * g / _sqrt(m + eps)
            bad |= ((p - p) != 0) | ((m - m) != 0)
            G[i] = P[i]
            U[i] = M[i]
            M[i] = m
            P[i] = p
    elif cfg.optimizer == OPT_SGD:
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            p = P[i] - lr * g
            bad |= (p - p) != 0
            G[i] = P[i]
            P[i] = p
    elif cfg.optimizer == OPT_RMSPROP:
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            m = b2 * M[i] + c2 * (g * g)
            p = P[i] - lr * g / (_sqrt(m) + eps)
            bad |= ((p - p) != 0) | ((m - m) != 0)
            G[i] = P[i]
            U[i] = M[i]
            M[i] = m
            P[i] = p
    elif cfg.optimizer == OPT_ADAM:
        # saving M and S inside the loop too left it unvectorised (six buffers): copied first
        memcpy(U, M, n * sizeof(floating))
        memcpy(US, S, n * sizeof(floating))
        for i in range(n):
            g = _clipped(G[i] * sc, do_clip, clip)
            m = b1 * M[i] + c1 * g
            v = b2 * S[i] + c2 * (g * g)
            p = P[i] - lr * (m / bc1) / (_sqrt(v / bc2) + eps)
            bad |= ((p - p) != 0) | ((m - m) != 0) | ((v - v) != 0)
            G[i] = P[i]
            M[i] = m
            S[i] = v
            P[i] = p
    return bad != 0


cdef void _restore(floating* P, const floating* G, floating* M, floating* S, Py_ssize_t n,
                   const UpdateConfig* cfg, const floating* U, const floating* US) noexcept nogil:
    # undoes _apply_guarded exactly: everything back as it was
    memcpy(P, G, n * sizeof(floating))
    if cfg.optimizer != OPT_SGD:
        memcpy(M, U, n * sizeof(floating))
    if cfg.optimizer == OPT_ADAM:
        memcpy(S, US, n * sizeof(floating))


cdef bint update_guarded(floating* P, floating* G, floating* M, floating* S, Py_ssize_t n,
                         const UpdateConfig* cfg, floating* U) noexcept nogil:
    # `update`, kept only if every new value of P, M and S is finite, else undone exactly (U:
    # undo_size values, the old M in U[:n] and the old S in U[n:]). Returns whether it was kept.
    cdef double norm = sqrt(_sumsq(G, n, cfg.grad_scale)) if cfg.clip_norm > 0 else -1.0
    if not _apply_guarded(P, G, M, S, n, cfg, _norm_scale(cfg, norm), U, _at(U, n)):
        return True
    _restore(P, G, M, S, n, cfg, U, _at(U, n))
    return False


# The update split over the team that ran a chunk split into `parts` (train_step): part s
# updates its ranges of the flat buffers (_owned). For a batch that is the s-th of `parts`
# near-equal shares, in a team started after the chunk's (_update_split). One sequence's slice s
# updates, at the end of its own BPTT and in the same team (_one_sequence), the parameters whose
# gradients it computed and no other slice wrote or still reads: its rows of Wxh and Whh, its
# units of bh, its share of the rows of Why and of by. So the rows of Whh (and their gradient)
# a core read in forward and BPTT are the ones it updates, while they are in its cache, and no
# second team is started (H=512 on two threads: 0.98x the time of a team of its own after the
# chunk's, in two interleaved A/B runs). A norm for clip_norm is the sum of the parts' sums, each summed over its ranges in
# order: the same for any number of threads running the `parts` parts, but not the one-pass sum
# of `update`.

cdef enum:
    MAX_OWNED = 5  # ranges of the flat buffers a part updates (_owned)

cdef inline int _owned(Py_ssize_t H, Py_ssize_t V, int B, int parts, int s, Py_ssize_t* lo,
                       Py_ssize_t* hi) noexcept nogil:
    # part s's ranges [lo[k], hi[k]) of the flat buffers (Wxh|Whh|Why|bh|by); returns how many
    cdef Py_ssize_t n = _n_params(H, V), HV = H * V, i0, i1, r0, r1
    if B != 1:
        lo[0], hi[0] = _slice(n, parts, s), _slice(n, parts, s + 1)
        return 1
    i0, i1 = _slice(H, parts, s), _slice(H, parts, s + 1)
    r0, r1 = _share(V, parts, s), _share(V, parts, s + 1)
    lo[0], hi[0] = i0 * V, i1 * V                                     # rows of Wxh
    lo[1], hi[1] = HV + i0 * H, HV + i1 * H                           # rows of Whh
    lo[2], hi[2] = HV + H * H + r0 * H, HV + H * H + r1 * H           # rows of Why
    lo[3], hi[3] = 2 * HV + H * H + i0, 2 * HV + H * H + i1           # bh
    lo[4], hi[4] = 2 * HV + H * H + H + r0, 2 * HV + H * H + H + r1   # by
    return 5


cdef void _update_team(floating* P, floating* G, floating* M, floating* S, Py_ssize_t n, int H,
                       int V, int B, int parts, const UpdateConfig* cfg, bint guarded,
                       floating* U, double* sums, int* bad) noexcept nogil:
    # Run by every thread of a team: `update`, or (guarded) `update_guarded` with the undo
    # scratch U (NULL for SGD, which needs none), on the ranges of _owned. sums[s]: part s's
    # squared norm; bad[s]: whether its update left a non-finite value, in which case every
    # part is restored.
    cdef int nt = fr_team_size(), rank = fr_team_rank(), s, j, q, k, m
    cdef Py_ssize_t lo[MAX_OWNED]
    cdef Py_ssize_t hi[MAX_OWNED]
    cdef Py_ssize_t i0, c
    cdef double norm = -1.0, total = 0.0, scale, acc
    cdef bint any_bad = False
    cdef floating* US = _at(U, n)
    if cfg.clip_norm > 0:
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            m = _owned(H, V, B, parts, s, lo, hi)
            acc = 0.0
            for k in range(m):
                acc += _sumsq(G + lo[k], hi[k] - lo[k], cfg.grad_scale)
            sums[s] = acc
        fr_barrier()
        for q in range(parts):
            total += sums[q]
        norm = sqrt(total)
    scale = _norm_scale(cfg, norm)
    for j in range(_mine(parts, rank, nt)):
        s = rank + j * nt
        m = _owned(H, V, B, parts, s, lo, hi)
        bad[s] = 0
        for k in range(m):
            i0, c = lo[k], hi[k] - lo[k]
            if not guarded:
                _apply(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, scale)
            elif _apply_guarded(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, scale,
                                _at(U, i0), _at(US, i0)):
                bad[s] = 1
    if not guarded:
        return
    fr_barrier()
    for q in range(parts):
        any_bad = any_bad or bad[q]
    if any_bad:
        for j in range(_mine(parts, rank, nt)):
            s = rank + j * nt
            m = _owned(H, V, B, parts, s, lo, hi)
            for k in range(m):
                i0, c = lo[k], hi[k] - lo[k]
                _restore(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, _at(U, i0),
                         _at(US, i0))


cdef bint _update_split(floating* P, floating* G, floating* M, floating* S, Py_ssize_t n, int H,
                        int V, int B, int parts, const UpdateConfig* cfg, bint guarded,
                        floating* U) noexcept nogil:
    # `update` or (guarded) `update_guarded` by a team of `parts` threads (_update_team);
    # returns whether the update was kept
    cdef double sums[MAX_PARTS]
    cdef int bad[MAX_PARTS]
    cdef int q
    cdef bint kept = True
    for q in range(parts):
        bad[q] = 0
    with parallel(num_threads=parts):
        _update_team(P, G, M, S, n, H, V, B, parts, cfg, guarded, U, sums, bad)
    for q in range(parts):
        kept = kept and not bad[q]
    return kept


cdef bint _stack_update(floating* P, floating* G, floating* M, floating* S, Py_ssize_t n,
                        const UpdateConfig* cfg, bint guarded, floating* U,
                        int parts) noexcept nogil:
    # `update` (guarded: `update_guarded`) on `parts` threads: the norm for clip_norm is summed
    # in order on one, then every element's step is the same elementwise operation wherever a
    # block starts, so the result is update's whatever the number of threads. Returns whether
    # the update was kept.
    cdef double norm = sqrt(_sumsq(G, n, cfg.grad_scale)) if cfg.clip_norm > 0 else -1.0
    cdef double scale = _norm_scale(cfg, norm)
    cdef Py_ssize_t blk, n_blk = (n + 65535) // 65536, i0, c
    cdef int bad = 0
    cdef floating* US = _at(U, n)
    for blk in prange(n_blk, num_threads=parts, schedule="static"):
        i0 = blk * 65536
        c = min(i0 + 65536, n) - i0
        if not guarded:
            _apply(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, scale)
        elif _apply_guarded(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, scale, _at(U, i0),
                            _at(US, i0)):
            bad |= 1
    if not bad:
        return True
    for blk in prange(n_blk, num_threads=parts, schedule="static"):
        i0 = blk * 65536
        c = min(i0 + 65536, n) - i0
        _restore(P + i0, G + i0, _at(M, i0), _at(S, i0), c, cfg, _at(U, i0), _at(US, i0))
    return False
