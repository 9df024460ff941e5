/* bfloat16 rounding for fastrnn's bf16 mode (see _bf16.pxi), and what the CPU reports of its
 * bfloat16 units.
 *
 * The bf16 mode's products take operands rounded to bfloat16 (the top 16 bits of a float32,
 * round to nearest, ties to even) and sum their products in float32. A product of two bfloat16
 * values (8-bit significands) is exact in float32 (24 bits), so rounding the operands and
 * running the float32 tile products (_tiles.h) gives the same terms as a bfloat16 dot-product
 * unit; only the order of the float32 additions differs.
 */
#ifndef FASTRNN_BF16_H
#define FASTRNN_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

/* the float32 bits of x rounded to bfloat16: NaN stays a (quiet) NaN, a finite value past the
 * largest bfloat16 rounds to infinity as the round-to-nearest rule says */
static inline uint32_t fr_bf16_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u | 0x00400000u) & 0xffff0000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

/* dst[i] = src[i] rounded to bfloat16 (as float32 values); dst may be src */
static void fr_round_bf16(const float *src, ptrdiff_t n, float *dst)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, src + i, 4);
        u = fr_bf16_bits(u);
        memcpy(dst + i, &u, 4);
    }
}

/* What this CPU reports (CPUID) of bfloat16 hardware: bit 0 AVX512-BF16, bit 1 AMX-BF16 with
 * AMX-TILE, bit 2 the OS enables the tile state (XCR0 bits 17 and 18). */
static int fr_bf16_cpu(void)
{
    int got = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 1, a, b, c, d);
    if (a & (1u << 5))
        got |= 1;
    __cpuid_count(7, 0, a, b, c, d);
    if ((d & (1u << 22)) && (d & (1u << 24)))
        got |= 2;
    __cpuid(1, a, b, c, d);
    if (c & (1u << 27)) { /* OSXSAVE: xgetbv is allowed */
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & (3u << 17)) == (3u << 17))
            got |= 4;
    }
#endif
    return got;
}

#endif
