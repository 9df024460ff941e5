/* The stacked models' products on their own: the tiles of src/fastrnn/_tiles.h over the shapes
 * of one layer's step (see bench/notes/2026-12-04-stack-products.md).
 *
 *   gcc -O3 -fno-math-errno -fno-trapping-math -mavx512f -mavx512cd -mavx512bw -mavx512dq \
 *       -mavx512vl -mfma -Wno-unused-function -I src/fastrnn bench/notes/tiles_harness.c -o th
 *   ./th H B G        # hidden size, rows per thread (B=64 on 2 threads: 32), gates (1, 3, 4)
 *
 * Environment: FLUSH=1 flushes the operands from every cache level before each timed run (the
 * products of a training step find theirs in L3 or memory); MIS=n places every buffer n floats
 * past a 64-byte line (numpy's own arrays start 16 bytes past one: MIS=4); ROWBLOCK=kb runs the
 * products with many rows in blocks of kb KB of A, every panel over a block (_stack.pxi's
 * _mm_panels does, with 512). Best of 7 runs, GFLOP/s of useful multiply-adds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "_tiles.h"

static int env(const char *name) { return getenv(name) ? atoi(getenv(name)) : 0; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *random_buffer(size_t n)
{
    float *p = (float *)aligned_alloc(64, (n * 4 + 63) / 64 * 64 + 4096) + env("MIS");
    for (size_t i = 0; i < n + 256; i++)
        p[i] = (float)rand() / RAND_MAX - 0.5f;
    return p;
}

static void flush(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i += 16)
        _mm_clflush(p + i);
}

/* C (M, N) += A (M, K) @ W (K, N), W in panels of 64 columns (K x 64 each), as _mm_panels */
static void panels(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *A, ptrdiff_t a_rs,
                   const float *Wp, float *C, ptrdiff_t ldc)
{
    ptrdiff_t nb = (N + 63) / 64, mc = M;
    if (env("ROWBLOCK")) {
        mc = (ptrdiff_t)env("ROWBLOCK") * 1024 / (K * 4) / 6 * 6;
        mc = mc < 24 ? 24 : mc;
    }
    for (ptrdiff_t i0 = 0; i0 < M; i0 += mc) {
        ptrdiff_t m = M - i0 < mc ? M - i0 : mc;
        for (ptrdiff_t pb = 0; pb < nb; pb++) {
            ptrdiff_t p0 = pb * 64, w = N - p0 < 64 ? N - p0 : 64;
            ptrdiff_t q0 = pb + 1 < nb ? p0 + 64 : 0, wq = N - q0 < 64 ? N - q0 : 64;
            fr_gemm_f32_pf(m, w, K, A + i0 * a_rs, a_rs, 1, Wp + K * p0, (w + 15) / 16 * 16, 1,
                           C + i0 * ldc + p0, ldc, 0, Wp + K * q0, K * ((wq + 15) / 16 * 16) * 4);
        }
    }
}

int main(int argc, char **argv)
{
    const ptrdiff_t H = argc > 1 ? atoi(argv[1]) : 256, B = argc > 2 ? atoi(argv[2]) : 32;
    const ptrdiff_t G = argc > 3 ? atoi(argv[3]) : 1, T = 128, GH = G * H, TB = T * B;
    float *hs = random_buffer(TB * H + H), *dG = random_buffer(TB * GH);
    float *Wp = random_buffer(GH * H + 4096), *C = random_buffer(TB * GH + 64);
    float *dW = random_buffer(GH * H + 64);
    const char *names[] = {"recurrent, forward (B, GH, H)", "input projection (TB, GH, H)",
                           "recurrent, BPTT (B, H, GH)", "dL/dx (TB, H, GH)",
                           "dW = dG^T hs (GH, H, TB)"};
    const ptrdiff_t shapes[][3] = {{B, GH, H}, {TB, GH, H}, {B, H, GH}, {TB, H, GH}, {GH, H, TB}};
    for (int q = 0; q < 5; q++) {
        const ptrdiff_t M = shapes[q][0], N = shapes[q][1], K = shapes[q][2];
        const int steps = M == B ? (int)T : 1; /* a recurrent product: once per time step */
        double best = 1e9;
        for (int round = 0; round < 7; round++) {
            if (env("FLUSH")) {
                flush(dG, TB * GH);
                flush(C, TB * GH);
                flush(hs, TB * H);
                _mm_mfence();
            }
            double t0 = now();
            for (int t = 0; t < steps; t++) {
                const float *A = K == H ? hs + (M == B ? t * B * H : 0)
                                        : dG + (M == B ? t * B * GH : 0);
                if (q < 4)
                    panels(M, N, K, A, K, Wp, C + (M == B ? t * B * N : 0), N);
                else
                    fr_gemm_f32_set(GH, H, TB, dG, 1, GH, hs, H, 1, dW, H);
            }
            double dt = now() - t0;
            best = dt < best ? dt : best;
        }
        printf("%-32s %7.1f GFLOP/s  %.3f ms\n", names[q], 2.0 * M * N * K * steps / best * 1e-9,
               best * 1e3);
    }
    return 0;
}
