/* Matrix-vector products, dot products and transposes for fastrnn's kernels, on 64-byte
 * vectors (fr_vf, fr_vd: one AVX-512 register; elsewhere gcc keeps them in memory): the
 * one-sequence paths (B=1) and the transposed copies of the weights. Included by _tiles.h,
 * after the vector types and partial loads it defines. */
#ifndef FASTRNN_VECS_H
#define FASTRNN_VECS_H

/* Horizontal sums of a whole vector's worth of vectors: lane i of the result is the sum of the
 * lanes of a[BITREV(i)], added pairwise in a fixed order (halves, then quarters, ...). */
static inline __attribute__((always_inline)) fr_vf fr_hsums_f32(const fr_vf *a)
{
    fr_vf u[8], v[4], w[2];
    for (int i = 0; i < 8; i++)
        u[i] = FR_SHUF_F(a[2*i], a[2*i+1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
             + FR_SHUF_F(a[2*i], a[2*i+1], 8, 9, 10, 11, 12, 13, 14, 15,
                         24, 25, 26, 27, 28, 29, 30, 31);
    for (int i = 0; i < 4; i++)
        v[i] = FR_SHUF_F(u[2*i], u[2*i+1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27)
             + FR_SHUF_F(u[2*i], u[2*i+1], 4, 5, 6, 7, 20, 21, 22, 23,
                         12, 13, 14, 15, 28, 29, 30, 31);
    for (int i = 0; i < 2; i++)
        w[i] = FR_SHUF_F(v[2*i], v[2*i+1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29)
             + FR_SHUF_F(v[2*i], v[2*i+1], 2, 3, 18, 19, 6, 7, 22, 23,
                         10, 11, 26, 27, 14, 15, 30, 31);
    return FR_SHUF_F(w[0], w[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30)
         + FR_SHUF_F(w[0], w[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
}

static inline __attribute__((always_inline)) fr_vd fr_hsums_f64(const fr_vd *a)
{
    fr_vd u[4], v[2];
    for (int i = 0; i < 4; i++)
        u[i] = FR_SHUF_D(a[2*i], a[2*i+1], 0, 1, 2, 3, 8, 9, 10, 11)
             + FR_SHUF_D(a[2*i], a[2*i+1], 4, 5, 6, 7, 12, 13, 14, 15);
    for (int i = 0; i < 2; i++)
        v[i] = FR_SHUF_D(u[2*i], u[2*i+1], 0, 1, 8, 9, 4, 5, 12, 13)
             + FR_SHUF_D(u[2*i], u[2*i+1], 2, 3, 10, 11, 6, 7, 14, 15);
    return FR_SHUF_D(v[0], v[1], 0, 8, 2, 10, 4, 12, 6, 14)
         + FR_SHUF_D(v[0], v[1], 1, 9, 3, 11, 5, 13, 7, 15);
}

static const int fr_bitrev16[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
static const int fr_bitrev8[8] = {0, 4, 2, 6, 1, 5, 3, 7};

/* FR_DEFINE_GEMV(T, V, IV, NAME, BITREV, HSUMS): void NAME##v(N, K, W, ldw, w_padded, x, y) on
 * 64-byte vectors (fr_vf, fr_vd), whose lanes HSUMS adds. */
#define FR_DEFINE_GEMV(T, V, IV, NAME, BITREV, HSUMS)                                           \
static inline __attribute__((always_inline)) V NAME##v_load(const T *p)                        \
{                                                                                              \
    V v;                                                                                       \
    memcpy(&v, p, sizeof(V));                                                                  \
    return v;                                                                                  \
}                                                                                              \
                                                                                               \
/* y (N) += W (N,K) @ x (K), W row-major: one row of A against W untransposed (the forward     \
 * step of one sequence, where transposing Whh each chunk would cost as much as it saves).     \
 * Rows go a whole vector's worth at a time; each row's dot product keeps one partial sum per  \
 * lane, and the lanes are added by HSUMS, in the same order for every row. The last K % LANES \
 * values of each row are read as a whole vector whose lanes past K are masked to zero, so    \
 * each row can be read up to a whole vector past K (w_padded: rows followed by more values); \
 * otherwise they are copied out first. */                                                     \
static void NAME##v(ptrdiff_t N, ptrdiff_t K, const T *W, ptrdiff_t ldw, int w_padded,        \
                    const T *x, T *y)                                                          \
{                                                                                              \
    enum { L = (int)(sizeof(V) / sizeof(T)) };                                                 \
    const ptrdiff_t Kv = K - K % L;                                                            \
    T xt[L], wt[L], out[L];                                                                    \
    V xtail;                                                                                   \
    IV keep = (IV){0};                                                                         \
    memset(xt, 0, sizeof(xt));                                                                 \
    memcpy(xt, x + Kv, (K - Kv) * sizeof(T));                                                  \
    memcpy(&xtail, xt, sizeof(V));                                                             \
    for (int j = 0; j < L; j++)                                                                \
        keep[j] = j < K - Kv ? -1 : 0;                                                         \
    for (ptrdiff_t i0 = 0; i0 < N; i0 += L) {                                                  \
        const T *rows[L];                                                                      \
        V acc[L];                                                                              \
        for (int j = 0; j < L; j++) {                                                          \
            ptrdiff_t r = i0 + BITREV[j];                                                      \
            rows[j] = W + (r < N ? r : N - 1) * ldw; /* past the last row: repeat it */        \
            acc[j] = (V){0};                                                                   \
        }                                                                                      \
        for (ptrdiff_t k = 0; k < Kv; k += L) {                                                \
            const V xv = NAME##v_load(x + k);                                                   \
            for (int j = 0; j < L; j++)                                                        \
                acc[j] += NAME##v_load(rows[j] + k) * xv;                                       \
        }                                                                                      \
        if (Kv < K && w_padded)                                                                \
            for (int j = 0; j < L; j++) {                                                      \
                IV w; /* lanes past K: zero, whatever they held */                             \
                memcpy(&w, rows[j] + Kv, sizeof(V));                                           \
                w &= keep;                                                                     \
                acc[j] += (V)w * xtail;                                                        \
            }                                                                                  \
        else if (Kv < K)                                                                       \
            for (int j = 0; j < L; j++) {                                                      \
                memset(wt, 0, sizeof(wt));                                                     \
                memcpy(wt, rows[j] + Kv, (K - Kv) * sizeof(T));                                \
                acc[j] += NAME##v_load(wt) * xtail;                                             \
            }                                                                                  \
        const V s = HSUMS(acc);                                                                \
        memcpy(out, &s, sizeof(V));                                                            \
        for (int j = 0; j < L && i0 + j < N; j++)                                              \
            y[i0 + j] += out[j];                                                               \
    }                                                                                          \
}

/* FR_DEFINE_DOTS(T, V, NAME, BITREV, HSUMS, PART_LOAD): void NAME(n, K, W, ldw, x, y): y[:n] +=
 * W (n,K) @ x for a few rows, 1 <= n <= 8: the last H % 16 units of a one-row recurrence whose
 * other units go through ROWSUM on whole vectors (see _kernels.pyx, _split_whh). Each row's dot
 * product keeps one partial sum per lane, and the lanes are added by HSUMS; the last K % lanes
 * values of x and of each row are read as a partial vector (PART_LOAD). */
#define FR_DEFINE_DOTS(T, V, NAME, BITREV, HSUMS, PART_LOAD)                                    \
static inline __attribute__((always_inline)) void NAME##_n(                                    \
    const int n, ptrdiff_t K, const T *W, ptrdiff_t ldw, const T *x, T *y)                     \
{                                                                                              \
    enum { L = (int)(sizeof(V) / sizeof(T)) };                                                 \
    const ptrdiff_t Kv = K - K % L;                                                            \
    T out[L];                                                                                  \
    V acc[L], xv, w;                                                                           \
    _Pragma("GCC unroll 16") /* (in registers, not a kilobyte of stack cleared) */             \
    for (int j = 0; j < L; j++)                                                                \
        acc[j] = (V){0};                                                                       \
    for (ptrdiff_t k = 0; k < Kv; k += L) {                                                    \
        memcpy(&xv, x + k, sizeof(V));                                                         \
        for (int j = 0; j < n; j++) { /* row j in lane j of HSUMS's result */                  \
            memcpy(&w, W + j * ldw + k, sizeof(V));                                            \
            acc[BITREV[j]] += w * xv;                                                          \
        }                                                                                      \
    }                                                                                          \
    if (Kv < K) {                                                                              \
        xv = PART_LOAD(x + Kv, (int)(K - Kv));                                                 \
        for (int j = 0; j < n; j++)                                                            \
            acc[BITREV[j]] += PART_LOAD(W + j * ldw + Kv, (int)(K - Kv)) * xv;                 \
    }                                                                                          \
    const V s = HSUMS(acc);                                                                    \
    memcpy(out, &s, sizeof(V));                                                                \
    for (int j = 0; j < n; j++)                                                                \
        y[j] += out[j];                                                                        \
}                                                                                              \
                                                                                               \
static void NAME(int n, ptrdiff_t K, const T *W, ptrdiff_t ldw, const T *x, T *y)              \
{                                                                                              \
    switch (n) { /* (a constant n: the rows' sums stay in registers) */                        \
    case 1: NAME##_n(1, K, W, ldw, x, y); break;                                               \
    case 2: NAME##_n(2, K, W, ldw, x, y); break;                                               \
    case 3: NAME##_n(3, K, W, ldw, x, y); break;                                               \
    case 4: NAME##_n(4, K, W, ldw, x, y); break;                                               \
    case 5: NAME##_n(5, K, W, ldw, x, y); break;                                               \
    case 6: NAME##_n(6, K, W, ldw, x, y); break;                                               \
    case 7: NAME##_n(7, K, W, ldw, x, y); break;                                               \
    default: NAME##_n(8, K, W, ldw, x, y); break;                                              \
    }                                                                                          \
}

/* dst (N, ldd) = src (M, N; rows lds apart)^T for floats. With AVX-512 (where a vector is one
 * register) 16x16 blocks go through registers: 16 rows loaded, transposed by four rounds of
 * two-vector shuffles (round d swaps bit d of the row and column indices), 16 rows stored; the
 * blocks at the edges too, under masks (value by value, the edges took a fifth of the time of
 * a chunk's transposes at H=100, V=77). Without it, all value by value, 16 source rows at a time
 * so each write is a contiguous run (the shuffles would cross registers there). */
#if defined(__AVX512F__)
#define FR_T_ROUND(d)                                                                           \
    for (int i = 0; i < 16; i++)                                                               \
        if (!(i & d)) {                                                                        \
            const fr_vf a = r[i], b = r[i + d];                                                \
            FR_T_PAIR_##d(a, b, r[i], r[i + d]);                                               \
        }
#define FR_T_PAIR_1(a, b, lo, hi)                                                              \
    lo = FR_SHUF_F(a, b, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);            \
    hi = FR_SHUF_F(a, b, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31)
#define FR_T_PAIR_2(a, b, lo, hi)                                                              \
    lo = FR_SHUF_F(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);             \
    hi = FR_SHUF_F(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31)
#define FR_T_PAIR_4(a, b, lo, hi)                                                              \
    lo = FR_SHUF_F(a, b, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);             \
    hi = FR_SHUF_F(a, b, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31)
#define FR_T_PAIR_8(a, b, lo, hi)                                                              \
    lo = FR_SHUF_F(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);               \
    hi = FR_SHUF_F(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)

/* one block of `rows` x `cols` (up to 16 each) values: rows read and written under masks, the
 * missing rows transposed as zeros and not stored (full blocks take the constant 16, 16) */
static inline __attribute__((always_inline)) void fr_transpose16_f32(
    const float *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd, int rows, int cols)
{
    fr_vf r[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? fr_part_load_f32(src + i * lds, cols) : (fr_vf){0};
    FR_T_ROUND(1)
    FR_T_ROUND(2)
    FR_T_ROUND(4)
    FR_T_ROUND(8)
    for (int i = 0; i < cols; i++)
        fr_part_store_f32(dst + i * ldd, r[i], rows);
}
#endif

static void fr_transpose_f32(ptrdiff_t M, ptrdiff_t N, const float *src, ptrdiff_t lds,
                             float *dst, ptrdiff_t ldd)
{
#if defined(__AVX512F__)
    for (ptrdiff_t i0 = 0; i0 < M; i0 += 16) {
        const int rows = M - i0 < 16 ? (int)(M - i0) : 16;
        for (ptrdiff_t j = 0; j < N; j += 16) {
            const int cols = N - j < 16 ? (int)(N - j) : 16;
            if (rows == 16 && cols == 16)  /* (constant masks: the inner block's plain loads) */
                fr_transpose16_f32(src + i0 * lds + j, lds, dst + j * ldd + i0, ldd, 16, 16);
            else
                fr_transpose16_f32(src + i0 * lds + j, lds, dst + j * ldd + i0, ldd, rows, cols);
        }
    }
#else
    ptrdiff_t i0 = 0;
    for (; i0 + 16 <= M; i0 += 16)
        for (ptrdiff_t j = 0; j < N; j++)
            for (int r = 0; r < 16; r++)
                dst[j * ldd + i0 + r] = src[(i0 + r) * lds + j];
    for (ptrdiff_t j = 0; j < N; j++)
        for (ptrdiff_t i = i0; i < M; i++)
            dst[j * ldd + i] = src[i * lds + j];
#endif
}

FR_DEFINE_GEMV(float, fr_vf, fr_vi, fr_gemm_f32, fr_bitrev16, fr_hsums_f32)
FR_DEFINE_GEMV(double, fr_vd, fr_vl, fr_gemm_f64, fr_bitrev8, fr_hsums_f64)
FR_DEFINE_DOTS(float, fr_vf, fr_dots_f32, fr_bitrev16, fr_hsums_f32, fr_part_load_f32)
FR_DEFINE_DOTS(double, fr_vd, fr_dots_f64, fr_bitrev8, fr_hsums_f64, fr_part_load_f64)

#endif
