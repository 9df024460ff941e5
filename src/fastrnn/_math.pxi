# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
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
