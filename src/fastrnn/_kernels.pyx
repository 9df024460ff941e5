"""Compiled kernels of fastrnn: step, forward, BPTT, optimizers and sampling (see _kernels.pxd).

The `def` functions at the bottom are the only Python-visible entry points. Each one checks every
shape, size and id range first (the ids in a copy of its own, which the kernel then reads), that
no buffer it writes overlaps another one, and that the hyperparameters survive rounding to the
buffers' float type, raising ValueError (TypeError for a wrong type or None) with a plain
message, and only then releases the GIL for the whole chunk.
Matrix products are register-tiled loops (_tiles.h); elementwise work is plain loops the
compiler vectorises. A batch large enough is split over threads with OpenMP (see _chunk).
"""
from libc.math cimport INFINITY, copysignf, exp, fabsf, floor, log, sqrt, sqrtf, tanh
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel, prange

from operator import index as _index
from cpython.long cimport PyLong_AsLongLongAndOverflow

import numpy as np

cdef extern from *:
    """
    #ifndef FASTRNN_BUILD_ISA
    #define FASTRNN_BUILD_ISA "baseline"
    #endif
    #ifdef _OPENMP
    #define FASTRNN_BUILD_OPENMP 1
    #else
    #define FASTRNN_BUILD_OPENMP 0
    #endif
    """
    int FASTRNN_BUILD_OPENMP
    int FASTRNN_BUILD_NATIVE
    int FASTRNN_BUILD_DEBUG
    const char* FASTRNN_BUILD_ISA
    int FASTRNN_BUILD_ASAN

BUILD_NATIVE = bool(FASTRNN_BUILD_NATIVE)
BUILD_DEBUG = bool(FASTRNN_BUILD_DEBUG)
BUILD_ASAN = bool(FASTRNN_BUILD_ASAN)
BUILD_OPENMP = bool(FASTRNN_BUILD_OPENMP)  # False: threads > 1 runs the parts one after another
BUILD_ISA = "native" if BUILD_NATIVE else FASTRNN_BUILD_ISA.decode()
OPTIMIZERS = {"adagrad": OPT_ADAGRAD, "sgd": OPT_SGD, "rmsprop": OPT_RMSPROP, "adam": OPT_ADAM}


# ---------------------------------------------------------------------------------------------
# Elementwise math. float64 uses libm (it is the precision path); float32 uses branch-free
# approximations the compiler vectorises (libm's tanhf/expf are scalar calls and were half the
# run time of a B=1 training step). Relative error: exp 1.1e-7, tanh 1.7e-7 (numpy's float32
# tanh: 1.1e-7), measured over [-80, 80] and [-10, 10].

cdef inline float _expf_approx(float x) noexcept nogil:
    # exp(x) = 2^k * e^r with k = round(x / ln 2), |r| <= ln(2)/2, e^r by its Taylor series
    cdef float k, r, p, scale
    cdef int bits
    x = min(max(x, <float>-87.33654), <float>88.0)  # keep 2^k a normal float
    k = (x * <float>1.4426950408889634 + <float>12582912.0) - <float>12582912.0  # round
    r = (x - k * <float>0.693359375) - k * <float>-2.12194440e-4  # Cody-Waite: ln 2 in two parts
    p = <float>(1.0 / 5040)
    p = p * r + <float>(1.0 / 720)
    p = p * r + <float>(1.0 / 120)
    p = p * r + <float>(1.0 / 24)
    p = p * r + <float>(1.0 / 6)
    p = p * r + <float>0.5
    p = p * r + <float>1.0
    p = p * r + <float>1.0
    bits = (<int>k + 127) << 23
    memcpy(&scale, &bits, sizeof(float))
    return p * scale

cdef inline float _tanhf_approx(float x) noexcept nogil:
    # odd Taylor polynomial near 0 (no cancellation), (1 - e^-2|x|) / (1 + e^-2|x|) elsewhere
    cdef float ax = fabsf(x), e, big, x2, small
    e = _expf_approx(<float>-2.0 * ax)
    big = copysignf((<float>1.0 - e) / (<float>1.0 + e), x)
    x2 = x * x
    small = x + x * x2 * (<float>(-1.0 / 3) + x2 * (<float>(2.0 / 15) + x2 * (
        <float>(-17.0 / 315) + x2 * <float>(62.0 / 2835))))
    return small if ax < <float>0.3 else big

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return _expf_approx(x)
    else:
        return exp(x)

cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return _tanhf_approx(x)
    else:
        return tanh(x)

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)

cdef inline void _tanh_inplace(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = _tanh(a[i])

cdef inline floating _sum(const floating* a, Py_ssize_t n) noexcept nogil:
    # four running sums in a fixed order: the loop pipelines, the result is deterministic
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += a[i]
        s1 += a[i + 1]
        s2 += a[i + 2]
        s3 += a[i + 3]
        i += 4
    while i < n:
        s0 += a[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


# ---------------------------------------------------------------------------------------------
# Matrix products, C (M,N) += A (M,K) @ W (K,N), by the register-tiled loops of _tiles.h. They
# replaced OpenBLAS (through scipy), measured here in float32 on one core: a step of the
# recurrence, 64x256 @ 256x256, 120 us with sgemm (which packs W again on every call) and 72 us
# tiled; 1x512 @ 512x512 (B=1) 27 us with sgemv and 11-15 us as dot products (_mv); the
# weight gradients of a B=1 chunk, 512x25 @ 25x512, 231 us with sgemm and 115 us tiled. The
# forward pass reads Whh and Why transposed once per chunk into zero-padded rows (_prepare);
# the other products read their operands in place.

cdef extern from "_tiles.h" nogil:
    void fr_gemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A, Py_ssize_t a_rs,
                     Py_ssize_t a_ks, const float* W, Py_ssize_t ldw, int w_padded, float* C,
                     Py_ssize_t ldc)
    void fr_gemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A, Py_ssize_t a_rs,
                     Py_ssize_t a_ks, const double* W, Py_ssize_t ldw, int w_padded, double* C,
                     Py_ssize_t ldc)
    void fr_gemm_f32_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                         Py_ssize_t a_rs, Py_ssize_t a_ks, const float* W, Py_ssize_t ldw,
                         int w_padded, float* C, Py_ssize_t ldc)
    void fr_gemm_f64_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                         Py_ssize_t a_rs, Py_ssize_t a_ks, const double* W, Py_ssize_t ldw,
                         int w_padded, double* C, Py_ssize_t ldc)
    void fr_gemm_f32v(Py_ssize_t N, Py_ssize_t K, const float* W, Py_ssize_t ldw, int w_padded,
                      const float* x, float* y)
    void fr_gemm_f64v(Py_ssize_t N, Py_ssize_t K, const double* W, Py_ssize_t ldw, int w_padded,
                      const double* x, double* y)
    void fr_rowsum_f32(Py_ssize_t N, Py_ssize_t K, const float* W, Py_ssize_t ldw,
                       const float* x, float* y)
    void fr_rowsum_f64(Py_ssize_t N, Py_ssize_t K, const double* W, Py_ssize_t ldw,
                       const double* x, double* y)
    void fr_transpose_f32(Py_ssize_t M, Py_ssize_t N, const float* src, Py_ssize_t lds,
                          float* dst, Py_ssize_t ldd)
    void fr_dots_f32(int n, Py_ssize_t K, const float* W, Py_ssize_t ldw, const float* x,
                     float* y)
    void fr_dots_f64(int n, Py_ssize_t K, const double* W, Py_ssize_t ldw, const double* x,
                     double* y)

cdef inline void _mm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A, Py_ssize_t a_rs,
                     Py_ssize_t a_ks, const floating* W, Py_ssize_t ldw, bint w_padded,
                     floating* C, Py_ssize_t ldc) noexcept nogil:
    # C (M,N) += A (M,K) @ W (K,N); A(r,k) = A[r*a_rs + k*a_ks]. w_padded: each row of W can be
    # read 16 values past N (a padded copy, or rows followed by other values)
    if floating is float:
        fr_gemm_f32(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc)
    else:
        fr_gemm_f64(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc)

cdef inline void _mm_set(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                         Py_ssize_t a_rs, Py_ssize_t a_ks, const floating* W, Py_ssize_t ldw,
                         bint w_padded, floating* C, Py_ssize_t ldc) noexcept nogil:
    # C (M,N) = A (M,K) @ W (K,N): _mm's sums started from zero (no pass clearing C first)
    if floating is float:
        fr_gemm_f32_set(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc)
    else:
        fr_gemm_f64_set(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc)

cdef inline void _rowsum(Py_ssize_t N, Py_ssize_t K, const floating* W, Py_ssize_t ldw,
                         const floating* x, floating* y) noexcept nogil:
    # y (N) += x (K) @ W (K,N); N a multiple of 16 and each row of W readable that far (a
    # zero-padded copy, or rows followed by other values, whose products land in y past the
    # values that matter)
    if floating is float:
        fr_rowsum_f32(N, K, W, ldw, x, y)
    else:
        fr_rowsum_f64(N, K, W, ldw, x, y)

cdef inline void _dots(int n, Py_ssize_t K, const floating* W, Py_ssize_t ldw,
                       const floating* x, floating* y) noexcept nogil:
    # y[:n] += W (n,K) @ x, 1 <= n <= 8
    if floating is float:
        fr_dots_f32(n, K, W, ldw, x, y)
    else:
        fr_dots_f64(n, K, W, ldw, x, y)

cdef inline void _split_mv(int H, const floating* head, const floating* tail, Py_ssize_t ld_tail,
                           const floating* x, floating* y) noexcept nogil:
    # y (H) += the recurrent product of a split recurrence (_split_whh), Hd = H - H % 16:
    # y[:Hd] += x @ head (H rows of Hd values) by ROWSUM, y[Hd:] += tail (H % 16 rows of H
    # values, ld_tail apart) @ x by _dots
    cdef Py_ssize_t Hd = H - H % 16
    _rowsum(Hd, H, head, Hd, x, y)
    _dots(H % 16, H, tail, ld_tail, x, y + Hd)

cdef inline void _rowsum_into(Py_ssize_t N, Py_ssize_t K, const floating* W, Py_ssize_t ldw,
                              const floating* x, floating* y, floating* pad) noexcept nogil:
    # y (N) += x (K) @ W (K, :N) for any N, by _rowsum on a copy of y padded to whole vectors in
    # pad (N + 16 values); each row of W must be readable that far. The backward step of one
    # sequence with H >= DOT_MIN_H: the sums of a whole row of W stay in registers while Whh
    # streams by (where a loop that added four scaled rows of W into y in memory ran at 3/4 of
    # the speed, and column tiles at 2/3)
    cdef Py_ssize_t Np = _padded(N)
    memcpy(pad, y, N * sizeof(floating))
    memset(pad + N, 0, (Np - N) * sizeof(floating))
    _rowsum(Np, K, W, ldw, x, pad)
    memcpy(y, pad, N * sizeof(floating))


cdef inline void _mv(Py_ssize_t N, Py_ssize_t K, const floating* W, Py_ssize_t ldw,
                     bint w_padded, const floating* x, floating* y) noexcept nogil:
    # y (N) += W (N,K) @ x; w_padded: each row of W can be read 16 values past K
    if floating is float:
        fr_gemm_f32v(N, K, W, ldw, w_padded, x, y)
    else:
        fr_gemm_f64v(N, K, W, ldw, w_padded, x, y)


cdef inline Py_ssize_t _transposed_ld(Py_ssize_t n) noexcept nogil:
    # row length of a transposed copy: n rounded up to 16 values, plus 16 when rows would be a
    # multiple of 128 values (512 or 1024 bytes) apart: a column's values would share few cache
    # sets, and the transposition ran at half speed
    cdef Py_ssize_t ld = (n + 15) // 16 * 16
    if ld % 128 == 0:
        ld += 16
    return ld


cdef void _transpose(Py_ssize_t M, Py_ssize_t N, const floating* src, Py_ssize_t lds,
                     floating* dst, Py_ssize_t ldd) noexcept nogil:
    # dst (N, ldd) = src (M, N; rows lds apart)^T. float: fr_transpose_f32, which takes 16x16
    # blocks through registers with AVX-512 (the value-by-value loops took 7% of a min-char
    # iteration, and BPTT's dWxh = dXT^T 5% more); double: 16 source rows at a time, so each
    # write is a contiguous run
    cdef Py_ssize_t i0 = 0, i, j, r
    cdef floating* o
    if floating is float:
        fr_transpose_f32(M, N, src, lds, dst, ldd)
    else:
        while i0 + 16 <= M:
            for j in range(N):
                o = dst + j * ldd + i0
                for r in range(16):
                    o[r] = src[(i0 + r) * lds + j]
            i0 += 16
        for j in range(N):
            for i in range(i0, M):
                dst[j * ldd + i] = src[i * lds + j]


cdef inline Py_ssize_t _padded(Py_ssize_t n) noexcept nogil:
    return (n + 15) // 16 * 16


cdef enum:
    SCRATCH_SLACK = 1024  # elements of slack that let _clear_of place a vector (see below)

cdef inline floating* _clear_of(floating* scratch, const floating* rows,
                                Py_ssize_t row_len) noexcept nogil:
    # A vector written while the matrix `rows` is read stalls the reads when its address and a
    # row's agree in the low 12 bits (4K aliasing: with H=512 every row did, and a product that
    # updated the vector row by row ran at a fifth of its speed). This returns a 64-byte aligned
    # place inside scratch (which has SCRATCH_SLACK spare elements) halfway between the page
    # offsets of the rows.
    cdef size_t page = 4096, row_bytes = row_len * sizeof(floating), g = page, r, tmp
    cdef size_t target, start = <size_t>scratch
    r = row_bytes % page
    while r:  # g = gcd(row_bytes, page): the rows' page offsets are g apart
        tmp = g % r
        g = r
        r = tmp
    target = ((<size_t>rows + g // 2) % page) & ~(<size_t>63)
    return <floating*>(start + (target - start % page + page) % page)


# ---------------------------------------------------------------------------------------------
# Kernels (contract in _kernels.pxd)

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
                dh[i] = dh[i] * (1 - h[i] * h[i])
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
                    dh[i] = dh[i] * (1 - h[i] * h[i])
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
    cdef Py_ssize_t k, v, i, r, n_le
    cdef floating m
    cdef double target, c, kept
    cdef int idx, j, n_rank, n_keep, n_nan
    cdef bint filtered = (0 < top_k < V) or top_p < 1
    n_rank = top_k if 0 < top_k < V else V
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
        n_nan = 0
        for v in range(V):
            n_nan += z[v] != z[v]
        if n_nan:  # (weights that overflow): no distribution to draw from
            return k
        m = _highest(z, V)
        if greedy:
            idx = 0
            for v in range(V):
                if z[v] == m:
                    idx = <int>v
                    break
        else:
            if filtered:
                _rank_top(z, V, n_rank, order)
            if m == INFINITY or m == -INFINITY:
                # z - m is NaN where z equals m: softmax's limit, mass 1 on each logit equal to
                # the highest and none elsewhere (as the numpy and torch backends)
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
            # inverse CDF: the first id whose cumulative mass (in double, in id order) exceeds
            # u * total, found by counting the cumulative masses up to it (no branch per id);
            # it has mass. If rounding leaves none, the last id with mass.
            c = 0.0
            for v in range(V):
                c += z[v]
                cum[v] = c
            target = u[k] * c
            n_le = 0
            for v in range(V):
                n_le += cum[v] <= target
            if n_le < V:
                idx = <int>n_le
            else:
                idx = V - 1  # (not left as such: the highest logit's mass is exp(0) = 1)
                for v in range(V - 1, -1, -1):
                    if z[v] > 0:
                        idx = <int>v
                        break
        out[k] = idx
        col = WxhT + idx * Hp
        for i in range(H):
            h[i] = _tanh(col[i] + hh[i])
    return -1


# ---------------------------------------------------------------------------------------------
# Python-visible wrappers: validate, then one nogil block.

def num_params(int hidden_size, int vocab_size):
    """Length of the flat parameter buffer Wxh|Whh|Why|bh|by."""
    H, V = hidden_size, vocab_size  # Python ints: no overflow for any C int sizes
    return 2 * H * V + H * H + H + V


def work_size(int batch_size, int seq_length, int hidden_size, int vocab_size, threads=1):
    """Length of the scratch buffer a chunk of (B,T) needs: the recurrent and output weights
    transposed (rows of H or V values padded to a multiple of 16, plus 16 when that is a multiple
    of 128), then hs with 16 values of slack, Z, dH (which holds a
    block of time steps and a carried (B,H) gradient: see _block_steps) and a (V,H) gradient.
    With `threads` > 1 a large enough chunk is split into parts (see chunk_parts): hs, Z, dH and
    the (V,H) gradient for each part's rows, then a gradient buffer for every part but the
    first. One sequence split into slices of its hidden units keeps one part's buffers, whose
    last vector (H padded to a multiple of 16) is followed by 2 * slices - 1 more: each slice's
    partial sums of BPTT, for two time steps in turn."""
    B, T, H, V = batch_size, seq_length, hidden_size, vocab_size  # Python ints: no overflow
    Hp = -(-H // 16) * 16  # _padded(H)
    parts = chunk_parts(B, T, H, V, threads)
    slices = 1
    if B == 1:  # slices of one sequence (see _one_sequence)
        slices, parts = parts, 1
    total = H * _transposed_ld(H) + H * _transposed_ld(V) + (parts - 1) * num_params(H, V) + \
        ((2 * slices - 1) * Hp if slices > 1 else 0)
    for p in range(parts):
        Bp = B // parts + (1 if p < B % parts else 0)
        steps = _block_steps(Bp, T, H, V) if (Bp + H + V) * T * H < 2**62 else T
        total += (T + 1) * Bp * H + WORK_SLACK + T * Bp * V + (steps + 1) * Bp * H + V * H + Hp
    return total


def chunk_parts(int batch_size, int seq_length, int hidden_size, int vocab_size, threads=1):
    """Into how many groups of rows, each on its own thread, a (B,T) chunk is split when the
    kernels may use `threads` threads: at most `threads` (and 64), each part at least one row and
    about 2**20 multiply-adds of work (a smaller part costs more to hand to a thread than it
    saves). Rows are split in order into parts whose sizes differ by at most one.

    One sequence (B=1) with H >= 512 is split instead into slices of its hidden units, at most
    `threads` and each at least 256 units, whose threads take every time step together."""
    return _chunk_parts(batch_size, seq_length, hidden_size, vocab_size, threads)


cdef int _chunk_parts(int B, int T, int H, int V, object threads) except -1:
    # chunk_parts, without a Python call (the wrappers ask at every call)
    cdef int n = _as_int(threads, "threads")
    if n < 1:
        raise ValueError(f"threads must be a positive integer, got {n}")
    if B <= 0 or T <= 0 or H <= 0 or V < 0:
        return 1
    # T*H*(H+V) must stay below 2**62 (_n_parts multiplies them in C): it does when all three
    # are below 2**20; else it is checked in (exact) Python ints
    if not (T < 2**20 and H < 2**20 and V < 2**20):
        if <object>T * H * (<object>H + V) >= 2**62:
            return 1
    return _n_parts(B, T, H, V, n)


def sample_work_size(int hidden_size, int vocab_size):
    """Length of the scratch buffer `sample` needs: the three weight matrices transposed, then
    logits and a state with room to be placed clear of the matrices (see _clear_of), then room
    for V cumulative masses in double on a 64-byte line (2 * V values, V padded to a multiple of
    16, and 16 more)."""
    H, V = hidden_size, vocab_size  # Python ints: no overflow
    Hp, Vp = -(-H // 16) * 16, -(-V // 16) * 16  # rows padded to a multiple of 16 (_padded)
    return V * Hp + H * Hp + H * Vp + SCRATCH_SLACK + Vp + Hp + 2 * Vp + 16


cdef int _as_int(object value, str name) except? -1:
    # A C int argument would take a float and truncate it (1.5 -> 1): integers only (anything
    # with __index__: Python and numpy integers, bools), and within a C int's range
    cdef int overflow = 0
    cdef long long v
    if type(value) is int:  # the usual case, without a call to operator.index
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow and -2**31 <= v < 2**31:
            return <int>v
    try:
        i = _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if not (-2**31 <= i < 2**31):
        raise OverflowError(f"{name}={i} does not fit a C int")
    return i


cdef inline void _span(const char** start, Py_ssize_t* nbytes, int k, const void* p,
                       Py_ssize_t n) noexcept:
    start[k] = <const char*>p
    nbytes[k] = n if p != NULL else 0


cdef int _check_disjoint(const char** start, Py_ssize_t* nbytes, int n, int n_written,
                         tuple names) except -1:
    # The first n_written of the n byte ranges [start, start + nbytes) are written by the kernel;
    # none of them may overlap any other range (the kernels assume distinct buffers: memcpy, and
    # reads of values the same call overwrites).
    cdef int i, j
    for i in range(n_written):
        for j in range(i + 1, n):
            if (nbytes[i] > 0 and nbytes[j] > 0 and start[i] < start[j] + nbytes[j]
                    and start[j] < start[i] + nbytes[i]):
                raise ValueError(f"{names[i]} and {names[j]} share memory; the kernels need "
                                 f"separate buffers")
    return 0


cdef int _check_scalar(floating x, double value, str name, bint allow_inf) except -1:
    # `value` was checked positive (and finite unless allow_inf) as a double; x is it rounded to
    # the buffers' type, which must still be positive (and finite): 1e-50 is 0 as a float32,
    # 1e300 is inf.
    if not (x > 0 and (allow_inf or x < <floating>INFINITY)):
        raise ValueError(f"{name}={value!r} is {x!r} as a "
                         f"{'float32' if floating is float else 'float64'}; choose a value the "
                         f"model's dtype can hold")
    return 0


cdef int _check_dims(Py_ssize_t n_params, int H, int V) except -1:
    if H <= 0 or V <= 0:
        raise ValueError(f"hidden_size and vocab_size must be positive, got {H} and {V}")
    cdef Py_ssize_t need
    if H < 2**30 and V < 2**30:  # num_params in C: 2HV + H^2 + H + V < 2**62
        need = 2 * <Py_ssize_t>H * V + <Py_ssize_t>H * H + H + V
        if n_params == need:
            return 0
    if n_params != num_params(H, V):
        raise ValueError(f"params has {n_params} elements, but hidden_size={H} and "
                         f"vocab_size={V} need {num_params(H, V)}")
    return 0


# The chunk wrappers copy the ids (inputs, then targets) into memory of the call's own, check
# them there, and the kernel reads that copy: another Python thread may write the caller's arrays
# while the kernel runs without the GIL, and an id the kernel indexes with must be one that was
# checked. A chunk of up to IDS_ON_STACK ids in all is copied onto the C stack (a trainer's
# usual chunk: no allocation), a larger one into an _Ids.
cdef enum:
    IDS_ON_STACK = 1024


cdef class _Ids:
    cdef int* data

    def __dealloc__(self):
        free(self.data)


cdef _Ids _ids_room(const int[:, ::1] inputs, bint with_targets):
    # None when the ids fit on the stack
    cdef Py_ssize_t n = inputs.shape[0] * inputs.shape[1] * (2 if with_targets else 1)
    if n <= IDS_ON_STACK:
        return None
    cdef _Ids ids = _Ids.__new__(_Ids)
    ids.data = <int*>malloc(n * sizeof(int))
    if ids.data == NULL:
        raise MemoryError(f"no memory for a copy of {n} ids")
    return ids


cdef int _check_ids(const int[:, ::1] ids, int V, str name, int* copy) except -1:
    # copies the ids into `copy`, then checks the copy
    cdef Py_ssize_t n = ids.shape[0] * ids.shape[1], k, bad = -1
    if n == 0:
        raise ValueError(f"{name} is empty")
    with nogil:
        memcpy(copy, &ids[0, 0], n * sizeof(int))
        for k in range(n):
            if copy[k] < 0 or copy[k] >= V:
                bad = k
                break
    if bad >= 0:
        raise ValueError(f"{name} holds id {copy[bad]} at flat position {bad}; ids must lie in "
                         f"[0, {V}) for vocab_size={V}")
    return 0


cdef Py_ssize_t _last_chunk[6]  # B, T, H, V, threads and work_size of the last chunk checked
_last_chunk[0] = -1


cdef int _check_chunk(Py_ssize_t n_params, const int[:, ::1] inputs, const int[:, ::1] targets,
                      Py_ssize_t h_rows, Py_ssize_t h_cols, Py_ssize_t n_work, int H,
                      int V, int threads, int* ids) except -1:
    # also copies inputs and targets into `ids`, where the kernel is to read them
    cdef Py_ssize_t B = inputs.shape[0], T = inputs.shape[1]
    _check_dims(n_params, H, V)
    _check_ids(inputs, V, "inputs", ids)
    if targets is not None:
        if targets.shape[0] != inputs.shape[0] or targets.shape[1] != inputs.shape[1]:
            raise ValueError(f"targets shape ({targets.shape[0]}, {targets.shape[1]}) does not "
                             f"match inputs shape ({inputs.shape[0]}, {inputs.shape[1]})")
        _check_ids(targets, V, "targets", ids + B * T)
    if h_rows != B or h_cols != H:
        raise ValueError(f"h has shape ({h_rows}, {h_cols}); expected (batch, hidden) = ({B}, {H})")
    cdef Py_ssize_t need
    if (_last_chunk[0] == B and _last_chunk[1] == T and _last_chunk[2] == H
            and _last_chunk[3] == V and _last_chunk[4] == threads):
        need = _last_chunk[5]  # (a trainer's every call)
    else:  # work_size, in exact Python ints, took 1/80 of a min-char call
        found = work_size(B, T, H, V, threads)
        if found >= 2**62:
            raise ValueError(f"chunk too large: {found} scratch elements exceed the kernels' "
                             f"2**31 limit")
        need = found
        _last_chunk[0], _last_chunk[1], _last_chunk[2] = B, T, H
        _last_chunk[3], _last_chunk[4], _last_chunk[5] = V, threads, need
    if n_work < need:
        raise ValueError(f"work has {n_work} elements; a ({B}, {T}) chunk needs {need}")
    if need >= 2**31:
        raise ValueError(f"chunk too large: {need} scratch elements exceed the kernels' 2**31 "
                         f"limit")
    return 0


def loss_and_grads(const floating[::1] params not None, floating[::1] grads not None,
                   const int[:, ::1] inputs not None, const int[:, ::1] targets,
                   floating[:, ::1] h not None, floating[::1] work not None,
                   hidden_size, vocab_size, floating[:, ::1] dh0=None, threads=1):
    """Forward and BPTT over one (B,T) chunk.

    Overwrites `grads` (unclipped), replaces h (B,H) by the last hidden state, writes dL/dh0 into
    `dh0` if given, and returns the summed cross-entropy. `threads`: the most threads the
    chunk may be split over (see chunk_parts).
    """
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef floating* p_dh0 = NULL
    cdef const char* start[7]
    cdef Py_ssize_t nbytes[7]
    if targets is None:
        raise ValueError("targets is required")
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, True)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
    if grads.shape[0] != params.shape[0]:
        raise ValueError(f"grads has {grads.shape[0]} elements; expected {params.shape[0]}")
    if dh0 is not None:
        if dh0.shape[0] != B or dh0.shape[1] != H:
            raise ValueError(f"dh0 has shape ({dh0.shape[0]}, {dh0.shape[1]}); expected ({B}, {H})")
        p_dh0 = &dh0[0, 0]
    _span(start, nbytes, 0, &grads[0], grads.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 2, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, p_dh0, B * H * sizeof(floating))
    _span(start, nbytes, 4, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 5, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 6, &targets[0, 0], targets.shape[0] * targets.shape[1] * sizeof(int))
    _check_disjoint(start, nbytes, 7, 4,
                    ("grads", "h", "work", "dh0", "params", "inputs", "targets"))
    with nogil:
        loss = _chunk(&params[0], H, V, B, T, ids, ids + <Py_ssize_t>B * T, &h[0, 0],
                      &work[0], &grads[0], p_dh0, parts, NULL, <floating*>NULL, <floating*>NULL,
                      False, <floating*>NULL, NULL)
        _last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    return loss


def forward_loss(const floating[::1] params not None, const int[:, ::1] inputs not None,
                 const int[:, ::1] targets, floating[:, ::1] h not None,
                 floating[::1] work not None, hidden_size, vocab_size, threads=1):
    """Forward only: returns the summed cross-entropy (0.0 if targets is None) and replaces h
    by the last hidden state."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef const int* p_targets = NULL
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, targets is not None)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
    if targets is not None:
        p_targets = &targets[0, 0]
    _span(start, nbytes, 0, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 1, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 4, p_targets, B * T * sizeof(int))
    _check_disjoint(start, nbytes, 5, 2, ("h", "work", "params", "inputs", "targets"))
    with nogil:
        loss = _chunk(&params[0], H, V, B, T, ids,
                      ids + <Py_ssize_t>B * T if p_targets != NULL else NULL, &h[0, 0],
                      &work[0], NULL, NULL, parts, NULL, <floating*>NULL, <floating*>NULL, False,
                      <floating*>NULL, NULL)
        _last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    return loss


cdef int _make_config(UpdateConfig* cfg, Py_ssize_t n, Py_ssize_t n_grads, Py_ssize_t n_state1,
                      Py_ssize_t n_state2, int optimizer, double lr, double eps, object clip,
                      double beta1, double beta2, double step, object clip_norm,
                      double grad_scale) except -1:
    # n_state1/n_state2: sizes of the optimizer state buffers, -1 where None was passed
    cdef double inf = INFINITY
    cdef double c = inf if clip is None else clip
    cdef double cn = inf if clip_norm is None else clip_norm
    if optimizer not in (OPT_ADAGRAD, OPT_SGD, OPT_RMSPROP, OPT_ADAM):
        raise ValueError(f"unknown optimizer code {optimizer}")
    if n_grads != n:
        raise ValueError(f"params and grads must have equal sizes, got {n} and {n_grads}")
    cdef int k
    cdef Py_ssize_t size
    for k in range(2):
        size = n_state1 if k == 0 else n_state2
        if (optimizer != OPT_SGD if k == 0 else optimizer == OPT_ADAM) and size != n:
            raise ValueError(f"optimizer state {k + 1} has "
                             f"{'no buffer' if size < 0 else f'{size} elements'}; expected {n}")
    if not (lr > 0 and lr < inf):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if not (eps > 0 and eps < inf):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    if not (c > 0):  # also rejects NaN; +inf is allowed and means no clipping
        raise ValueError(f"clip must be positive (or None to disable), got {clip}")
    if not (cn > 0):
        raise ValueError(f"clip_norm must be positive (or None to disable), got {clip_norm}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must lie in [0, 1), got {beta1} and {beta2}")
    if not (step >= 1 and step == floor(step) and step < inf):
        raise ValueError(f"step must be a positive integer, got {step}")
    if not (grad_scale > 0 and grad_scale < inf):
        raise ValueError(f"grad_scale must be a positive finite number, got {grad_scale}")
    cfg.optimizer = optimizer
    cfg.lr, cfg.eps, cfg.beta1, cfg.beta2, cfg.step = lr, eps, beta1, beta2, step
    cfg.grad_scale = grad_scale
    cfg.clip_norm = cn if cn < inf else 0.0
    cfg.do_clip = c < inf
    cfg.clip = c
    return 0


cdef inline Py_ssize_t _size(const floating[::1] a):
    return -1 if a is None else a.shape[0]


cdef inline floating* _ptr(floating[::1] a):
    return NULL if a is None or a.shape[0] == 0 else &a[0]


cdef int _check_update_scalars(floating x, double lr, double eps, object clip,
                               object clip_norm, double grad_scale) except -1:
    # the hyperparameters must survive rounding to the buffers' float type (x only picks it)
    _check_scalar(<floating>lr, lr, "lr", False)
    _check_scalar(<floating>eps, eps, "eps", False)
    cdef double c
    if clip is not None:
        c = clip
        _check_scalar(<floating>c, c, "clip", True)
    if clip_norm is not None:
        c = clip_norm
        _check_scalar(<floating>c, c, "clip_norm", True)
    _check_scalar(<floating>grad_scale, grad_scale, "grad_scale", False)
    return 0


cdef inline floating* _state_ptr(floating[::1] a, bint used):
    # an optimizer state buffer the optimizer does not use is neither read nor written (nor
    # checked for size or overlap): the kernel gets NULL
    return _ptr(a) if used else NULL


def optimizer_update(floating[::1] params not None, const floating[::1] grads not None,
                     floating[::1] state1, floating[::1] state2, optimizer, double lr,
                     double eps=1e-8, clip=None, double beta1=0.9, double beta2=0.999,
                     double step=1, clip_norm=None, double grad_scale=1.0):
    """One optimizer step in place (see `update` in _kernels.pxd); `optimizer` is a code from
    OPTIMIZERS. state1 is Adagrad's/RMSprop's memory or Adam's first moment, state2 Adam's second
    (None where unused). Returns the gradient norm when clip_norm is given, else -1."""
    cdef UpdateConfig cfg
    cdef double norm
    cdef const char* start[4]
    cdef Py_ssize_t nbytes[4]
    cdef int opt = _as_int(optimizer, "optimizer")
    _make_config(&cfg, params.shape[0], grads.shape[0], _size(state1), _size(state2), opt,
                 lr, eps, clip, beta1, beta2, step, clip_norm, grad_scale)
    _check_update_scalars(<floating>0, lr, eps, clip, clip_norm, grad_scale)
    if params.shape[0] == 0:
        return -1.0
    cdef floating* p_state1 = _state_ptr(state1, opt != OPT_SGD)
    cdef floating* p_state2 = _state_ptr(state2, opt == OPT_ADAM)
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, p_state1, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, p_state2, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &grads[0], grads.shape[0] * sizeof(floating))
    _check_disjoint(start, nbytes, 4, 3, ("params", "state1", "state2", "grads"))
    with nogil:
        norm = update(&params[0], &grads[0], p_state1, p_state2, params.shape[0], &cfg)
    return norm


def adagrad_update(floating[::1] params not None, const floating[::1] grads not None,
                   floating[::1] mem not None, double lr, double eps, clip):
    """Adagrad step in place; clip=None disables elementwise clipping."""
    optimizer_update(params, grads, mem, None, OPT_ADAGRAD, lr, eps, clip)


def train_step(floating[::1] params not None, floating[::1] grads not None, floating[::1] mem,
               const int[:, ::1] inputs not None, const int[:, ::1] targets,
               floating[:, ::1] h not None, floating[::1] work not None, hidden_size,
               vocab_size, optimizer, double lr, double eps, clip,
               floating[::1] mem2=None, double beta1=0.9, double beta2=0.999, double step=1,
               clip_norm=None, double grad_scale=1.0, floating[::1] undo=None, threads=1):
    """One whole training iteration in one call: forward, BPTT, clipping and the optimizer
    update (the arguments after `optimizer` as in `optimizer_update`; mem and mem2 are its state
    1 and 2). Replaces h by the last hidden state and returns the summed loss of the chunk.

    With `undo` (scratch of undo_size(n, optimizer) values, possibly none) the step is
    guarded: when the loss is not finite nothing is updated, and when the update leaves a
    non-finite value in params or the optimizer state (a NaN or infinite gradient, an overflow)
    it is undone exactly, from the old values it saved in `grads` and `undo` as it went (grads
    then holds no gradient). A step not taken leaves params, mem, mem2 and h as they were.
    Returns (loss, taken) then. `threads`: as in loss_and_grads; a chunk split over threads is
    updated on them too, each on its range of the parameters (a norm for clip_norm is then
    summed by range)."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef UpdateConfig cfg
    cdef const char* start[9]
    cdef Py_ssize_t nbytes[9]
    cdef int opt = _as_int(optimizer, "optimizer")
    cdef bint taken = True
    if targets is None:
        raise ValueError("targets is required")
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, True)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
    _make_config(&cfg, params.shape[0], grads.shape[0], _size(mem), _size(mem2), opt, lr,
                 eps, clip, beta1, beta2, step, clip_norm, grad_scale)
    _check_update_scalars(<floating>0, lr, eps, clip, clip_norm, grad_scale)
    if undo is not None and undo.shape[0] < undo_size(params.shape[0], opt):
        raise ValueError(f"undo has {undo.shape[0]} elements; this optimizer needs "
                         f"{undo_size(params.shape[0], opt)}")
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &grads[0], grads.shape[0] * sizeof(floating))
    cdef floating* p_mem = _state_ptr(mem, opt != OPT_SGD)
    cdef floating* p_mem2 = _state_ptr(mem2, opt == OPT_ADAM)
    _span(start, nbytes, 2, p_mem, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, p_mem2, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 5, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 6, _ptr(undo), _size(undo) * sizeof(floating))
    _span(start, nbytes, 7, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 8, &targets[0, 0], targets.shape[0] * targets.shape[1] * sizeof(int))
    _check_disjoint(start, nbytes, 9, 7,
                    ("params", "grads", "mem", "mem2", "h", "work", "undo", "inputs", "targets"))
    cdef floating* p_undo = _ptr(undo)
    cdef bint guarded = undo is not None
    # one sequence split over threads: the step is taken by the team that ran the chunk
    cdef bint in_team = B == 1 and parts > 1
    cdef int bad[MAX_PARTS]
    cdef int q
    for q in range(MAX_PARTS):
        bad[q] = 0
    with nogil:
        loss = _chunk(&params[0], H, V, B, T, ids, ids + <Py_ssize_t>B * T, &h[0, 0],
                      &work[0], &grads[0], NULL, parts, &cfg if in_team else NULL, p_mem, p_mem2,
                      guarded, p_undo, bad)
        if in_team:
            if not guarded:
                _last_state(&work[0], H, V, B, T, parts, &h[0, 0])
            else:  # (a non-finite loss: no step taken)
                taken = loss - loss == 0
                for q in range(parts):
                    taken = taken and not bad[q]
        elif not guarded:
            _last_state(&work[0], H, V, B, T, parts, &h[0, 0])
            if parts > 1:  # on as many threads as ran the chunk
                _update_split(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], H, V, B,
                              parts, &cfg, False, NULL)
            else:
                update(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], &cfg)
        elif loss - loss == 0:
            # a non-finite loss (x - x is NaN for NaN and +-inf) takes no step; nor does an
            # update that leaves a non-finite value
            if parts > 1:
                taken = _update_split(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], H,
                                      V, B, parts, &cfg, True, p_undo)
            else:
                taken = update_guarded(&params[0], &grads[0], p_mem, p_mem2, params.shape[0],
                                       &cfg, p_undo)
        else:
            taken = False
        if guarded and taken:
            _last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    if guarded:
        return loss, taken
    return loss


def undo_size(Py_ssize_t n_params, int optimizer):
    """Length of the `undo` scratch of a guarded train_step: room for each buffer of the
    optimizer's state (the old parameters go into `grads`)."""
    return n_params * ((optimizer != OPT_SGD) + (optimizer == OPT_ADAM))


def sample(const floating[::1] params not None, floating[::1] h not None,
           const double[::1] uniforms not None, double temperature, bint greedy,
           int[::1] out not None, floating[::1] work not None, hidden_size, vocab_size,
           top_k=0, double top_p=1.0):
    """Generate len(out) ids from state h (updated in place); see `generate` in _kernels.pxd.
    Raises FloatingPointError where the logits hold a NaN (out and h then hold what was drawn
    and reached before that id)."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef Py_ssize_t n = out.shape[0]
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    cdef int k = _as_int(top_k, "top_k")
    _check_dims(params.shape[0], H, V)
    if h.shape[0] != H:
        raise ValueError(f"h has {h.shape[0]} elements; expected hidden_size={H}")
    if work.shape[0] < sample_work_size(H, V):
        raise ValueError(f"work has {work.shape[0]} elements; sampling needs "
                         f"{sample_work_size(H, V)}")
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0: off), got {k}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if not greedy:
        if uniforms.shape[0] < n:
            raise ValueError(f"need {n} uniforms, got {uniforms.shape[0]}")
        if not (temperature > 0 and temperature < INFINITY):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        _check_scalar(<floating>temperature, temperature, "temperature", False)
    _span(start, nbytes, 0, &h[0], h.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &out[0] if n else NULL, n * sizeof(int))
    _span(start, nbytes, 2, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, &uniforms[0] if uniforms.shape[0] else NULL,
          uniforms.shape[0] * sizeof(double))
    _check_disjoint(start, nbytes, 5, 3, ("h", "out", "work", "params", "uniforms"))
    if n == 0:
        return
    cdef int[::1] order = np.empty(V, dtype=np.intc)
    cdef Py_ssize_t stopped
    with nogil:
        stopped = generate(&params[0], H, V, &h[0], n, &uniforms[0] if not greedy else NULL,
                           <floating>temperature, greedy, k, top_p, &out[0], &work[0],
                           &order[0])
    if stopped >= 0:
        # (the words of fastrnn.backends.numpy_backend.nan_logits_message)
        raise FloatingPointError(
            f"the logits hold NaN at generated id {stopped}: the parameters overflow "
            f"{'float32' if floating is float else 'float64'} in this state, so there is no "
            f"distribution to sample from")


# ---------------------------------------------------------------------------------------------
# Stacked rnn / lstm / gru models: cells, chunk driver, sampling, wrappers
include "_cells.pxi"
include "_stack.pxi"
include "_stack_sample.pxi"
include "_stack_api.pxi"
include "_beam.pxi"
