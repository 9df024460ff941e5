/* Register-tiled matrix products for fastrnn's kernels (see _kernels.pyx):
 *
 *     C (M,N) += A (M,K) @ W (K,N)
 *
 * C and W row-major (rows ldc / ldw values apart), A strided: A(r,k) = A[r*a_rs + k*a_ks], so
 * A may be a transposed view (the weight gradients are dZ^T @ hs and dH^T @ hs).
 *
 * C is built in tiles of up to 6 rows by FR_TILE_NV vectors one register wide (with AVX-512
 * four 64-byte vectors: 64 floats, 32 doubles; else two): for each
 * k, every row's A(r,k) times W's row k is added to the tile, so each C[r,j] is summed over k
 * in order and no -ffast-math is needed (but for one- and two-row tiles, which sum even and odd
 * k apart and add the two at the end: one chain of dependent adds per vector would run at half
 * speed). K is cut into blocks whose rows of W stay in the L2 cache while every tile of C
 * passes over them. With AVX-512, the columns after the last tile of four whole vectors go
 * through one tile whose last vector is read and written under a mask (N=100: 36 columns in one
 * pass over K, not two). Without it, they go through a tile of one vector, then, if
 * w_padded is set (each row of W readable up to the next whole vector past N: a zero-padded
 * copy), a one-vector tile on a copy of the last columns, else one column at a time.
 *
 * This is C rather than Cython only because the tile must stay in registers: GCC's vector
 * extension (vector_size) makes it an array of vectors, which gcc maps to vector registers
 * when a vector is exactly one register wide (fr_tf, fr_td below); a wider one it keeps in
 * memory. The one-sequence kernels and the transposes are in _vecs.h.
 */
#ifndef FASTRNN_TILES_H
#define FASTRNN_TILES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
/* the vectors never cross a function boundary (always_inline), so the ABI note about passing
 * 64-byte vectors without AVX-512 does not apply */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define FR_KC_BYTES (256 * 1024) /* W rows per block of K: at most this many bytes of them */
/* a product over K blocks fetches the next block's rows while C and two blocks fit in this */
#define FR_KNEXT_BYTES (1536 * 1024)
/* The products' tiles (FR_DEFINE_GEMM, FR_DEFINE_ROWSUM) work on vectors one register wide,
 * fr_tf and fr_td, and their largest tile is 6 rows by FR_TILE_NV of them: with AVX-512's 32
 * registers 6 x 4 sums, 4 of W and a broadcast; with the 16 of AVX or SSE 6 x 2. A vector
 * wider than the registers (the 64-byte fr_vf without AVX-512) is not split into registers
 * but kept on the stack, and a tile too large spills its sums on every step over K: with
 * both, the AVX2 build ran a 1-layer GRU 20 times slower than the AVX-512 one. */
#if defined(__AVX512F__)
#define FR_TBYTES 64
#define FR_TILE_NV 4
#elif defined(__AVX__)
#define FR_TBYTES 32
#define FR_TILE_NV 2
#else
#define FR_TBYTES 16
#define FR_TILE_NV 2
#endif
/* one software prefetch into L2 of the next line of a range, while it lasts */
#define FR_PREFETCH_STEP(pc, end)                                                              \
    do {                                                                                       \
        if ((pc) < (end)) {                                                                    \
            __builtin_prefetch((const void *)(pc), 0, 2);                                      \
            (pc) += 64;                                                                        \
        }                                                                                      \
    } while (0)
#define FR_ONE_ROW_MAX 256       /* a one-row product up to this wide goes through ROWSUM */

typedef float fr_vf __attribute__((vector_size(64)));
typedef double fr_vd __attribute__((vector_size(64)));
typedef int fr_vi __attribute__((vector_size(64)));
typedef long long fr_vl __attribute__((vector_size(64)));
typedef float fr_tf __attribute__((vector_size(FR_TBYTES)));
typedef double fr_td __attribute__((vector_size(FR_TBYTES)));

#if defined(__clang__)
#define FR_SHUF_F(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define FR_SHUF_D(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define FR_SHUF_F(a, b, ...) __builtin_shuffle(a, b, (fr_vi){__VA_ARGS__})
#define FR_SHUF_D(a, b, ...) __builtin_shuffle(a, b, (fr_vl){__VA_ARGS__})
#endif

/* FR_DEFINE_ROWSUM(T, V, NAME): void NAME(N, K, W, ldw, x, y): y (N) += x (K) @ W (K,N), for
 * one vector x (sampling, and the one-row products of FR_DEFINE_GEMM: the recurrence of one
 * sequence). N must be a whole number of vectors and each row of W readable that far (a
 * zero-padded copy, or rows followed by other values), rows ldw >= N apart. Up to FR_ROWSUM_NV
 * vectors of y stay in registers, twice (even and odd k, added at the end), while K rows of W
 * go by: with AVX-512's 32 registers 12 (a whole 192-value row of W read at once), else 6. */
#if defined(__AVX512F__)
#define FR_ROWSUM_NV 12
#else
#define FR_ROWSUM_NV 6
#endif
#define FR_DEFINE_ROWSUM(T, V, NAME)                                                           \
static inline __attribute__((always_inline)) void NAME##_block(                                \
    const int NV, ptrdiff_t K, const T *W, ptrdiff_t ldw, const T *x, T *y)                   \
{                                                                                              \
    enum { L = (int)(sizeof(V) / sizeof(T)) };                                                 \
    V a[12], b[12];                                                                            \
    ptrdiff_t k = 0;                                                                           \
    for (int v = 0; v < NV; v++) {                                                             \
        memcpy(&a[v], y + v * L, sizeof(V));                                                   \
        b[v] = (V){0};                                                                         \
    }                                                                                          \
    for (; k + 2 <= K; k += 2) {                                                               \
        const T x0 = x[k], x1 = x[k + 1];                                                      \
        const T *w0 = W + k * ldw, *w1 = w0 + ldw;                                             \
        for (int v = 0; v < NV; v++) {                                                         \
            V c, d;                                                                            \
            memcpy(&c, w0 + v * L, sizeof(V));                                                 \
            memcpy(&d, w1 + v * L, sizeof(V));                                                 \
            a[v] += x0 * c;                                                                    \
            b[v] += x1 * d;                                                                    \
        }                                                                                      \
    }                                                                                          \
    for (; k < K; k++)                                                                         \
        for (int v = 0; v < NV; v++) {                                                         \
            V c;                                                                               \
            memcpy(&c, W + k * ldw + v * L, sizeof(V));                                        \
            a[v] += x[k] * c;                                                                  \
        }                                                                                      \
    for (int v = 0; v < NV; v++) {                                                             \
        a[v] += b[v];                                                                          \
        memcpy(y + v * L, &a[v], sizeof(V));                                                   \
    }                                                                                          \
}                                                                                              \
                                                                                               \
static void NAME(ptrdiff_t N, ptrdiff_t K, const T *W, ptrdiff_t ldw, const T *x, T *y)       \
{                                                                                              \
    enum { L = (int)(sizeof(V) / sizeof(T)) };                                                 \
    for (ptrdiff_t j = 0; j < N; j += FR_ROWSUM_NV * L) {                                      \
        switch ((N - j) / L < FR_ROWSUM_NV ? (int)((N - j) / L) : FR_ROWSUM_NV) {              \
        case 12: NAME##_block(12, K, W + j, ldw, x, y + j); break;                             \
        case 11: NAME##_block(11, K, W + j, ldw, x, y + j); break;                             \
        case 10: NAME##_block(10, K, W + j, ldw, x, y + j); break;                             \
        case 9: NAME##_block(9, K, W + j, ldw, x, y + j); break;                               \
        case 8: NAME##_block(8, K, W + j, ldw, x, y + j); break;                               \
        case 7: NAME##_block(7, K, W + j, ldw, x, y + j); break;                               \
        case 6: NAME##_block(6, K, W + j, ldw, x, y + j); break;                               \
        case 5: NAME##_block(5, K, W + j, ldw, x, y + j); break;                               \
        case 4: NAME##_block(4, K, W + j, ldw, x, y + j); break;                               \
        case 3: NAME##_block(3, K, W + j, ldw, x, y + j); break;                               \
        case 2: NAME##_block(2, K, W + j, ldw, x, y + j); break;                               \
        default: NAME##_block(1, K, W + j, ldw, x, y + j); break;                              \
        }                                                                                      \
    }                                                                                          \
}

/* The first n lanes of a vector, the others zero, and a store of the first n (0 < n <= lanes):
 * the last columns of a product, the edges of a transpose, the last values of fr_dots' rows. With
 * AVX-512 they are masked loads and stores. Without it they are copies, correct but slow: no
 * tile is given a partial last vector then (FR_MASKED_TAIL 0), and fr_dots takes one per row
 * and call. */
#if defined(__AVX512F__)
#define FR_MASKED_TAIL 1
static inline __attribute__((always_inline)) fr_vf fr_part_load_f32(const float *p, int n)
{
    return (fr_vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline __attribute__((always_inline)) void fr_part_store_f32(float *p, fr_vf v, int n)
{
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
}
static inline __attribute__((always_inline)) fr_vd fr_part_load_f64(const double *p, int n)
{
    return (fr_vd)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
}
static inline __attribute__((always_inline)) void fr_part_store_f64(double *p, fr_vd v, int n)
{
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
}
#else
#define FR_MASKED_TAIL 0
#define FR_DEFINE_PART(T, V, SUFFIX)                                                           \
static inline __attribute__((always_inline)) V fr_part_load_##SUFFIX(const T *p, int n)        \
{                                                                                              \
    V v = (V){0};                                                                              \
    memcpy(&v, p, n * sizeof(T));                                                              \
    return v;                                                                                  \
}                                                                                              \
static inline __attribute__((always_inline)) void fr_part_store_##SUFFIX(T *p, V v, int n)     \
{                                                                                              \
    memcpy(p, &v, n * sizeof(T));                                                              \
}
FR_DEFINE_PART(float, fr_vf, f32)
FR_DEFINE_PART(double, fr_vd, f64)
FR_DEFINE_PART(float, fr_tf, tf32)
FR_DEFINE_PART(double, fr_td, td64)
#endif
#if FR_TBYTES == 64
#define fr_part_load_tf32 fr_part_load_f32
#define fr_part_store_tf32 fr_part_store_f32
#define fr_part_load_td64 fr_part_load_f64
#define fr_part_store_td64 fr_part_store_f64
#endif

/* FR_DEFINE_GEMM(T, V, NAME, ROWSUM, PART_LOAD, PART_STORE): void NAME(M, N, K, A, a_rs, a_ks,
 * W, ldw, w_padded, C, ldc), NAME##_set (the same arguments, C = instead of +=) and NAME##_pf
 * for element type T and vector type V (fr_tf, fr_td; PART_LOAD, PART_STORE: their partial
 * loads and stores; ROWSUM: FR_DEFINE_ROWSUM's on V). */
#define FR_DEFINE_GEMM(T, V, NAME, ROWSUM, PART_LOAD, PART_STORE)                               \
enum { NAME##_LANES = (int)(sizeof(V) / sizeof(T)) };                                          \
                                                                                               \
static inline __attribute__((always_inline)) V NAME##_load(const T *p)                         \
{                                                                                              \
    V v;                                                                                       \
    memcpy(&v, p, sizeof(V)); /* an unaligned vector load */                                   \
    return v;                                                                                  \
}                                                                                              \
                                                                                               \
/* a vector of W or C: the last of a tile whose last vector has `part` lanes (0: all) is read   \
 * under a mask (FR_MASKED_TAIL) */                                                            \
static inline __attribute__((always_inline)) V NAME##_get(const T *p, int last, int part)      \
{                                                                                              \
    return last && part ? PART_LOAD(p, part) : NAME##_load(p);                                 \
}                                                                                              \
                                                                                               \
/* C[:R, :NV vectors] += A[:R, :K] @ W[:K, :NV vectors] (= if zero_c); with part > 0 only the   \
 * first `part` columns of the last vector are read and written */                             \
static inline __attribute__((always_inline)) void NAME##_tile(                                 \
    const int R, const int NV, ptrdiff_t K, const T *A, ptrdiff_t a_rs, ptrdiff_t a_ks,        \
    const T *W, ptrdiff_t ldw, T *C, ptrdiff_t ldc, const int zero_c, const int part,          \
    uintptr_t *pf, uintptr_t pf_end)                                                           \
{                                                                                              \
    V acc[6][4], odd[2][4];                                                                    \
    const int L = NAME##_LANES;                                                                \
    ptrdiff_t k = 0;                                                                           \
    uintptr_t pc = *pf;                                                                        \
    for (int r = 0; r < R; r++)                                                                \
        for (int v = 0; v < NV; v++)                                                           \
            acc[r][v] = zero_c ? (V){0} : NAME##_get(C + r * ldc + v * L, v == NV - 1, part);  \
    if (R <= 2) {                                                                              \
        for (int r = 0; r < R; r++)                                                            \
            for (int v = 0; v < NV; v++)                                                       \
                odd[r][v] = (V){0};                                                            \
        for (; k + 2 <= K; k += 2) {                                                           \
            const T *w0 = W + k * ldw, *w1 = w0 + ldw;                                         \
            V b0[4], b1[4];                                                                    \
            FR_PREFETCH_STEP(pc, pf_end);                                                      \
            for (int v = 0; v < NV; v++) {                                                     \
                b0[v] = NAME##_get(w0 + v * L, v == NV - 1, part);                             \
                b1[v] = NAME##_get(w1 + v * L, v == NV - 1, part);                             \
            }                                                                                  \
            for (int r = 0; r < (R <= 2 ? R : 2); r++) {                                       \
                const T x0 = A[r * a_rs + k * a_ks], x1 = A[r * a_rs + (k + 1) * a_ks];        \
                for (int v = 0; v < NV; v++) {                                                 \
                    acc[r][v] += x0 * b0[v];                                                   \
                    odd[r][v] += x1 * b1[v];                                                   \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    for (; k < K; k++) {                                                                       \
        const T *w = W + k * ldw;                                                              \
        V b[4];                                                                                \
        FR_PREFETCH_STEP(pc, pf_end);                                                          \
        for (int v = 0; v < NV; v++)                                                           \
            b[v] = NAME##_get(w + v * L, v == NV - 1, part);                                   \
        for (int r = 0; r < R; r++) {                                                          \
            const T x = A[r * a_rs + k * a_ks];                                                \
            for (int v = 0; v < NV; v++)                                                       \
                acc[r][v] += x * b[v];                                                         \
        }                                                                                      \
    }                                                                                          \
    for (int r = 0; r < R; r++)                                                                \
        for (int v = 0; v < NV; v++) {                                                         \
            V out = acc[r][v];                                                                 \
            if (R <= 2)                                                                        \
                out += odd[r < 2 ? r : 0][v];                                                  \
            if (v == NV - 1 && part)                                                           \
                PART_STORE(C + r * ldc + v * L, out, part);                                    \
            else                                                                               \
                memcpy(C + r * ldc + v * L, &out, sizeof(V));                                  \
        }                                                                                      \
    *pf = pc;                                                                                  \
}                                                                                              \
                                                                                               \
/* C[:R, :nv] += A[:R, :K] @ W[:K, :nv] for nv < one vector, by a one-vector tile on a copy */ \
static inline __attribute__((always_inline)) void NAME##_edge(                                 \
    const int R, int nv, ptrdiff_t K, const T *A, ptrdiff_t a_rs, ptrdiff_t a_ks, const T *W,  \
    ptrdiff_t ldw, T *C, ptrdiff_t ldc, const int zero_c, uintptr_t *pf, uintptr_t pf_end)     \
{                                                                                              \
    T buf[6][NAME##_LANES];                                                                    \
    memset(buf, 0, sizeof(buf));                                                               \
    for (int r = 0; r < R && !zero_c; r++)                                                     \
        memcpy(buf[r], C + r * ldc, nv * sizeof(T));                                           \
    NAME##_tile(R, 1, K, A, a_rs, a_ks, W, ldw, &buf[0][0], NAME##_LANES, 0, 0, pf, pf_end);   \
    for (int r = 0; r < R; r++)                                                                \
        memcpy(C + r * ldc, buf[r], nv * sizeof(T));                                           \
}                                                                                              \
                                                                                               \
/* all N columns of R rows: tiles of FR_TILE_NV vectors; then, with masks (FR_MASKED_TAIL), one \
 * the rest, its last vector masked (N=100: 4 and 3 vectors, two passes over K); without,      \
 * tiles of 2 and 1 vectors, then a one-vector tile on a copy if W is padded, else column by    \
 * column */                                                                                   \
static inline __attribute__((always_inline)) void NAME##_rows(                                 \
    const int R, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t a_rs, ptrdiff_t a_ks,         \
    const T *W, ptrdiff_t ldw, int w_padded, T *C, ptrdiff_t ldc, const int zero_c,            \
    uintptr_t *pf, uintptr_t pf_end)                                                           \
{                                                                                              \
    const int L = NAME##_LANES;                                                                \
    ptrdiff_t j = 0;                                                                           \
    for (; j + FR_TILE_NV * L <= N; j += FR_TILE_NV * L)                                       \
        NAME##_tile(R, FR_TILE_NV, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, 0,        \
                    pf, pf_end);                                                               \
    if (FR_MASKED_TAIL && j < N) {                                                             \
        const int part = (int)((N - j) % L);                                                   \
        switch ((int)((N - j + L - 1) / L)) {                                                  \
        case 1:                                                                                \
            NAME##_tile(R, 1, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, part,          \
                        pf, pf_end);                                                           \
            break;                                                                             \
        case 2:                                                                                \
            NAME##_tile(R, 2, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, part,          \
                        pf, pf_end);                                                           \
            break;                                                                             \
        case 3:                                                                                \
            NAME##_tile(R, 3, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, part,          \
                        pf, pf_end);                                                           \
            break;                                                                             \
        default:                                                                               \
            NAME##_tile(R, 4, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, part,          \
                        pf, pf_end);                                                           \
            break;                                                                             \
        }                                                                                      \
        j = N;                                                                                 \
    }                                                                                          \
    if (j + 2 * L <= N) {                                                                      \
        NAME##_tile(R, 2, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, 0,                 \
                    pf, pf_end);                                                               \
        j += 2 * L;                                                                            \
    }                                                                                          \
    if (j + L <= N) {                                                                          \
        NAME##_tile(R, 1, K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, 0,                 \
                    pf, pf_end);                                                               \
        j += L;                                                                                \
    }                                                                                          \
    if (j < N && w_padded) {                                                                   \
        NAME##_edge(R, (int)(N - j), K, A, a_rs, a_ks, W + j, ldw, C + j, ldc, zero_c, pf,     \
                    pf_end);                                                                   \
        j = N;                                                                                 \
    }                                                                                          \
    for (; j < N; j++)                                                                         \
        for (int r = 0; r < R; r++) {                                                          \
            T s = zero_c ? (T)0 : C[r * ldc + j];                                              \
            for (ptrdiff_t k = 0; k < K; k++)                                                  \
                s += A[r * a_rs + k * a_ks] * W[k * ldw + j];                                  \
            C[r * ldc + j] = s;                                                                \
        }                                                                                      \
}                                                                                              \
                                                                                               \
static void NAME##_run(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t a_rs,      \
                       ptrdiff_t a_ks, const T *W, ptrdiff_t ldw, int w_padded, T *C,          \
                       ptrdiff_t ldc, const int zero_c, const void *pf, ptrdiff_t pf_bytes)    \
{                                                                                              \
    enum { L = (int)(sizeof(V) / sizeof(T)) };                                                 \
    uintptr_t pc = (uintptr_t)pf, pf_end = pf ? pc + (uintptr_t)pf_bytes : 0;                  \
    uintptr_t pa = 0, pa_end = 0; /* a second range, fetched after the first */                \
    if (zero_c && K <= 0)                                                                      \
        for (ptrdiff_t i = 0; i < M; i++)                                                      \
            memset(C + i * ldc, 0, N * sizeof(T));                                             \
    if (M == 1 && a_ks == 1 && w_padded && N <= FR_ONE_ROW_MAX) {                              \
        /* one row: the whole padded row of C in registers, one pass over W (ROWSUM), where    \
         * the column tiles make a pass per tile, two of them latency-bound */                 \
        const ptrdiff_t Np = (N + L - 1) / L * L;                                              \
        T row[FR_ONE_ROW_MAX];                                                                 \
        if (zero_c)                                                                            \
            memset(row, 0, Np * sizeof(T));                                                    \
        else {                                                                                 \
            memcpy(row, C, N * sizeof(T));                                                     \
            memset(row + N, 0, (Np - N) * sizeof(T));                                          \
        }                                                                                      \
        ROWSUM(Np, K, W, ldw, A, row);                                                         \
        memcpy(C, row, N * sizeof(T));                                                         \
        return;                                                                                \
    }                                                                                          \
    ptrdiff_t kc = FR_KC_BYTES / (ptrdiff_t)sizeof(T) / (ldw > 0 ? ldw : 1);                   \
    if (kc < 16)                                                                               \
        kc = 16;                                                                               \
    for (ptrdiff_t k0 = 0; k0 < K; k0 += kc) {                                                 \
        const ptrdiff_t kk = K - k0 < kc ? K - k0 : kc;                                        \
        const T *a = A + k0 * a_ks, *w = W + k0 * ldw;                                         \
        const int z = zero_c && k0 == 0;                                                       \
        if (!pf && k0 + kk < K && ldw <= N + L && a_rs == 1 && a_ks <= M + L &&               \
            (M * N + 2 * kc * (N + M)) * (ptrdiff_t)sizeof(T) <= FR_KNEXT_BYTES) {             \
            /* a weight gradient (K the chunk's rows, A transposed): the next block of K's     \
             * rows of W and of A, fetched into L2 while this block's tiles run */              \
            const ptrdiff_t kn = K - k0 - kk < kc ? K - k0 - kk : kc;                          \
            pc = (uintptr_t)(w + kk * ldw);                                                    \
            pf_end = pc + (uintptr_t)(kn * ldw) * sizeof(T);                                   \
            pa = (uintptr_t)(a + kk * a_ks);                                                   \
            pa_end = pa + (uintptr_t)(kn * a_ks) * sizeof(T);                                  \
        }                                                                                      \
        /* six-row tiles, but a rest of one or two rows (tiles that pass over W for few sums,  \
         * a batch part of 32 rows: 5 x 6 + 2) joins the last six into 4 + 3 or 4 + 4 rows      \
         * (one core, 32x256 @ 256x256 in panels: 147 against 157 GFLOP/s, best of five) */     \
        const ptrdiff_t m6 = M >= 6 && M % 6 != 0 && M % 6 <= 2 ? M - 6 - M % 6 : M;           \
        ptrdiff_t i = 0;                                                                       \
        for (; i + 6 <= m6; i += 6) {                                                          \
            NAME##_rows(6, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
            if (pc >= pf_end && pa < pa_end) {                                                 \
                pc = pa;                                                                       \
                pf_end = pa_end;                                                               \
                pa = pa_end = 0;                                                               \
            }                                                                                  \
        }                                                                                      \
        if (M - i >= 7) {                                                                      \
            NAME##_rows(4, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
            i += 4;                                                                            \
        }                                                                                      \
        if (M - i == 3 || M - i == 5) {                                                        \
            NAME##_rows(3, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
            i += 3;                                                                            \
        }                                                                                      \
        if (i + 4 <= M) {                                                                      \
            NAME##_rows(4, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
            i += 4;                                                                            \
        }                                                                                      \
        if (i + 2 <= M) {                                                                      \
            NAME##_rows(2, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
            i += 2;                                                                            \
        }                                                                                      \
        if (i < M)                                                                             \
            NAME##_rows(1, N, kk, a + i * a_rs, a_rs, a_ks, w, ldw, w_padded, C + i * ldc,     \
                        ldc, z, &pc, pf_end);                                                  \
    }                                                                                          \
}                                                                                              \
                                                                                               \
static void NAME(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t a_rs,           \
                 ptrdiff_t a_ks, const T *W, ptrdiff_t ldw, int w_padded, T *C, ptrdiff_t ldc) \
{                                                                                              \
    NAME##_run(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc, 0, NULL, 0);                  \
}                                                                                              \
                                                                                               \
/* C = A @ W: the same sums, started from zero instead of from C (no pass to clear C first) */ \
static void NAME##_set(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t a_rs,     \
                       ptrdiff_t a_ks, const T *W, ptrdiff_t ldw, int w_padded, T *C,          \
                       ptrdiff_t ldc)                                                          \
{                                                                                              \
    NAME##_run(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc, 1, NULL, 0);                  \
}                                                                                              \
                                                                                               \
/* C (+)= A @ W while pf_bytes from pf on are fetched into the L2 cache, a cache line per step  \
 * of a tile's pass over K: the next panel of a product that goes panel by panel over a weight \
 * matrix larger than L2 (a recurrent step of an LSTM with H=512 reads 4 MB). Without it the   \
 * first tile of each panel waited on L3 for its rows of W (one core, 32x512 @ 512x2048 in    \
 * panels: 124 against 142 GFLOP/s). */                                                        \
static void NAME##_pf(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const T *A, ptrdiff_t a_rs,      \
                      ptrdiff_t a_ks, const T *W, ptrdiff_t ldw, int w_padded, T *C,           \
                      ptrdiff_t ldc, int zero_c, const void *pf, ptrdiff_t pf_bytes)          \
{                                                                                              \
    NAME##_run(M, N, K, A, a_rs, a_ks, W, ldw, w_padded, C, ldc, zero_c != 0, pf, pf_bytes);   \
}                                                                                              \

FR_DEFINE_ROWSUM(float, fr_tf, fr_rowsum_f32)
FR_DEFINE_ROWSUM(double, fr_td, fr_rowsum_f64)
FR_DEFINE_GEMM(float, fr_tf, fr_gemm_f32, fr_rowsum_f32, fr_part_load_tf32, fr_part_store_tf32)
FR_DEFINE_GEMM(double, fr_td, fr_gemm_f64, fr_rowsum_f64, fr_part_load_td64, fr_part_store_td64)

/* the one-sequence kernels on 64-byte vectors and the transposes */
#include "_vecs.h"

#endif
