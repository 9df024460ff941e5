# Part of _kernels.pyx (included there; one compiled module per instruction set).
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
    void fr_gemm_f32_pf(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                        Py_ssize_t a_rs, Py_ssize_t a_ks, const float* W, Py_ssize_t ldw,
                        int w_padded, float* C, Py_ssize_t ldc, int zero_c, const void* pf,
                        Py_ssize_t pf_bytes)
    void fr_gemm_f64_pf(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                        Py_ssize_t a_rs, Py_ssize_t a_ks, const double* W, Py_ssize_t ldw,
                        int w_padded, double* C, Py_ssize_t ldc, int zero_c, const void* pf,
                        Py_ssize_t pf_bytes)
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

cdef inline void _mm_pf(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                        Py_ssize_t a_rs, Py_ssize_t a_ks, const floating* W, Py_ssize_t ldw,
                        bint w_padded, floating* C, Py_ssize_t ldc, bint zero_c,
                        const floating* pf, Py_ssize_t pf_len) noexcept nogil:
    # _mm (zero_c: _mm_set) while the pf_len values from pf on are fetched into L2 (_tiles.h)
    if floating is float:
        fr_gemm_f32_pf(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc, zero_c, pf,
                       pf_len * sizeof(float))
    else:
        fr_gemm_f64_pf(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc, zero_c, pf,
                       pf_len * sizeof(double))

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
