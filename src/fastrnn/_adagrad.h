/* The float32 Adagrad step of fastrnn's kernels (see _apply in _kernels.pyx), for n elements:
 *
 *     g = clip(G * sc, -clip, clip)   (if do_clip; NaN stays NaN)
 *     M += g * g
 *     P -= lr * g / sqrt(M + eps)
 *
 * With AVX-512 or AVX2, 1/sqrt(M + eps) comes from the hardware's estimate refined by Newton
 * steps instead of a square root and a division: those two share one divider, which bounded the
 * whole update (a C loop over the 23,205 parameters of min-char took 13.1 us, 5.2 us without
 * them). Each step comes within a few parts in 10^7 of the exact one, like float32's exp and
 * tanh (see _kernels.pyx); M is numpy's bit for bit; float64 stays exact. Lanes whose M + eps is
 * not a normal finite float (a subnormal eps with M = 0, an overflow to inf, NaN) take the exact
 * square root and division, so infinities and NaNs come out as numpy's. The last n % lanes
 * elements go through the same vector code under a mask, so an element gets the same value
 * wherever a range starts (the update split over threads must equal the one-pass update
 * exactly).
 *
 * fr_adagrad_f32 updates in place; fr_adagrad_guarded_f32 also saves each old P into G and each
 * old M into U (the undo of _apply_guarded) and returns whether any new P or M is not finite.
 * FR_ADAGRAD_FAST tells whether this build has the fast path (else _kernels.pyx keeps its loop).
 */
#ifndef FASTRNN_ADAGRAD_H
#define FASTRNN_ADAGRAD_H

#include <float.h>
#include <stddef.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define FR_ADAGRAD_FAST 1

static inline __attribute__((always_inline)) __m512 fr_adagrad_v(
    __m512 p, __m512 g, __m512 *m, __m512 sc, int do_clip, __m512 clip, __m512 nclip,
    __m512 lr, __m512 eps)
{
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    __m512 x, y, e, lrg, out, gg;
    __mmask16 special;
    g = _mm512_mul_ps(g, sc);
    if (do_clip)  /* min(a, b) is b when either is NaN: a NaN gradient stays NaN */
        g = _mm512_max_ps(nclip, _mm512_min_ps(clip, g));
    gg = _mm512_mul_ps(g, g);
    __asm__("" : "+v"(gg));  /* two roundings, as numpy's: not contracted into an FMA */
    *m = _mm512_add_ps(*m, gg);
    x = _mm512_add_ps(*m, eps);
    y = _mm512_rsqrt14_ps(x);                                   /* relative error < 2^-14 */
    e = _mm512_fnmadd_ps(_mm512_mul_ps(x, y), y, one);          /* 1 - x y^2 */
    y = _mm512_fmadd_ps(_mm512_mul_ps(y, half), e, y);          /* one Newton step */
    lrg = _mm512_mul_ps(lr, g);
    special = _mm512_cmp_ps_mask(x, _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ)
            | _mm512_cmp_ps_mask(x, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ);  /* tiny, inf, NaN */
    out = _mm512_fnmadd_ps(lrg, y, p);  /* the new P */
    if (__builtin_expect(special != 0, 0))  /* (the other lanes as in any vector) */
        out = _mm512_mask_sub_ps(out, special, p, _mm512_div_ps(lrg, _mm512_sqrt_ps(x)));
    return out;
}

static inline __attribute__((always_inline)) int fr_adagrad_body_f32(
    float *P, float *G, float *M, float *U, ptrdiff_t n, float sc_, int do_clip, float clip_,
    float lr_, float eps_)
{
    const __m512 sc = _mm512_set1_ps(sc_), clip = _mm512_set1_ps(clip_);
    const __m512 nclip = _mm512_set1_ps(-clip_);
    const __m512 lr = _mm512_set1_ps(lr_), eps = _mm512_set1_ps(eps_);
    __mmask16 bad = 0;
    for (ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 p0 = _mm512_maskz_loadu_ps(k, P + i), m0 = _mm512_maskz_loadu_ps(k, M + i);
        __m512 m = m0, p = fr_adagrad_v(p0, _mm512_maskz_loadu_ps(k, G + i), &m, sc, do_clip,
                                       clip, nclip, lr, eps);
        if (U) {  /* x - x is 0 for finite x, NaN for NaN and +-inf */
            bad |= _mm512_mask_cmp_ps_mask(k, _mm512_sub_ps(p, p), _mm512_setzero_ps(),
                                           _CMP_NEQ_UQ)
                 | _mm512_mask_cmp_ps_mask(k, _mm512_sub_ps(m, m), _mm512_setzero_ps(),
                                           _CMP_NEQ_UQ);
            _mm512_mask_storeu_ps(G + i, k, p0);
            _mm512_mask_storeu_ps(U + i, k, m0);
        }
        _mm512_mask_storeu_ps(M + i, k, m);
        _mm512_mask_storeu_ps(P + i, k, p);
    }
    return bad != 0;
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FR_ADAGRAD_FAST 1

static inline __attribute__((always_inline)) __m256 fr_adagrad_v(
    __m256 p, __m256 g, __m256 *m, __m256 sc, int do_clip, __m256 clip, __m256 nclip,
    __m256 lr, __m256 eps)
{
    const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    __m256 x, y, e, lrg, out, gg, special;
    g = _mm256_mul_ps(g, sc);
    if (do_clip)  /* min(a, b) is b when either is NaN: a NaN gradient stays NaN */
        g = _mm256_max_ps(nclip, _mm256_min_ps(clip, g));
    gg = _mm256_mul_ps(g, g);
    __asm__("" : "+x"(gg));  /* two roundings, as numpy's: not contracted into an FMA */
    *m = _mm256_add_ps(*m, gg);
    x = _mm256_add_ps(*m, eps);
    y = _mm256_rsqrt_ps(x);                                     /* relative error < 1.5 2^-12 */
    e = _mm256_fnmadd_ps(_mm256_mul_ps(x, y), y, one);          /* two Newton steps */
    y = _mm256_fmadd_ps(_mm256_mul_ps(y, half), e, y);
    e = _mm256_fnmadd_ps(_mm256_mul_ps(x, y), y, one);
    y = _mm256_fmadd_ps(_mm256_mul_ps(y, half), e, y);
    lrg = _mm256_mul_ps(lr, g);
    special = _mm256_or_ps(_mm256_cmp_ps(x, _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ),
                           _mm256_cmp_ps(x, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
    out = _mm256_fnmadd_ps(lrg, y, p);  /* the new P */
    if (__builtin_expect(!_mm256_testz_ps(special, special), 0))  /* (the others as usual) */
        out = _mm256_blendv_ps(out, _mm256_sub_ps(p, _mm256_div_ps(lrg, _mm256_sqrt_ps(x))),
                               special);
    return out;
}

static inline __attribute__((always_inline)) int fr_adagrad_body_f32(
    float *P, float *G, float *M, float *U, ptrdiff_t n, float sc_, int do_clip, float clip_,
    float lr_, float eps_)
{
    const __m256 sc = _mm256_set1_ps(sc_), clip = _mm256_set1_ps(clip_);
    const __m256 nclip = _mm256_set1_ps(-clip_);
    const __m256 lr = _mm256_set1_ps(lr_), eps = _mm256_set1_ps(eps_);
    __m256 bad = _mm256_setzero_ps();
    for (ptrdiff_t i = 0; i < n; i += 8) {
        const int r = n - i >= 8 ? 8 : (int)(n - i);
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(r),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 p0 = _mm256_maskload_ps(P + i, k), m0 = _mm256_maskload_ps(M + i, k);
        __m256 m = m0, p = fr_adagrad_v(p0, _mm256_maskload_ps(G + i, k), &m, sc, do_clip,
                                       clip, nclip, lr, eps);
        if (U) {  /* x - x is 0 for finite x, NaN for NaN and +-inf */
            __m256 nf = _mm256_or_ps(
                _mm256_cmp_ps(_mm256_sub_ps(p, p), _mm256_setzero_ps(), _CMP_NEQ_UQ),
                _mm256_cmp_ps(_mm256_sub_ps(m, m), _mm256_setzero_ps(), _CMP_NEQ_UQ));
            bad = _mm256_or_ps(bad, _mm256_and_ps(nf, _mm256_castsi256_ps(k)));
            _mm256_maskstore_ps(G + i, k, p0);
            _mm256_maskstore_ps(U + i, k, m0);
        }
        _mm256_maskstore_ps(M + i, k, m);
        _mm256_maskstore_ps(P + i, k, p);
    }
    return !_mm256_testz_ps(bad, bad);
}

#else
#define FR_ADAGRAD_FAST 0
static inline int fr_adagrad_body_f32(float *P, float *G, float *M, float *U, ptrdiff_t n,
                                      float sc, int do_clip, float clip, float lr, float eps)
{
    (void)P; (void)G; (void)M; (void)U; (void)n; (void)sc; (void)do_clip; (void)clip;
    (void)lr; (void)eps;
    return -1;  /* never called: _kernels.pyx keeps its exact loop when FR_ADAGRAD_FAST is 0 */
}
#endif

static void fr_adagrad_f32(float *P, const float *G, float *M, ptrdiff_t n, float sc, int do_clip,
                           float clip, float lr, float eps)
{
    fr_adagrad_body_f32(P, (float *)G, M, NULL, n, sc, do_clip, clip, lr, eps);
}

static int fr_adagrad_guarded_f32(float *P, float *G, float *M, float *U, ptrdiff_t n, float sc,
                                  int do_clip, float clip, float lr, float eps)
{
    return fr_adagrad_body_f32(P, G, M, U, n, sc, do_clip, clip, lr, eps);
}

#endif
