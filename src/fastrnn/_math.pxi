# Part of the kernels (included by _hot.pyx, built per instruction set; _kernels.pyx includes it
# too, for its inline sizes and layouts).
# ---------------------------------------------------------------------------------------------
# Elementwise math. float64 uses libm (it is the precision path); float32 uses branch-free
# approximations the compiler vectorises (libm's tanhf/expf are scalar calls and were half the
# run time of a B=1 training step). Relative error: exp 1.1e-7 over [-80, 80]; tanh 2.9e-7
# (4.8 units in the last place; numpy's float32 tanh: 1.1e-7) over every third positive float.

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
    # p(x) / q(x), odd and even minimax polynomials of degree 13 and 6 (Eigen's float tanh), on
    # x clamped to where tanh rounds to +-1; x itself below 4e-4 (p's first terms underflow
    # for subnormal x). One division and 12 multiply-adds, half the time of (1 - e^-2|x|) /
    # (1 + e^-2|x|) with its exp. The clamp lets NaN through.
    cdef float y = x, x2, p, q
    if y < <float>-7.90531110763549805:
        y = <float>-7.90531110763549805
    if y > <float>7.90531110763549805:
        y = <float>7.90531110763549805
    x2 = y * y
    p = <float>-2.76076847742355e-16
    p = p * x2 + <float>2.00018790482477e-13
    p = p * x2 + <float>-8.60467152213735e-11
    p = p * x2 + <float>5.12229709037114e-08
    p = p * x2 + <float>1.48572235717979e-05
    p = p * x2 + <float>6.37261928875436e-04
    p = p * x2 + <float>4.89352455891786e-03
    q = <float>1.19825839466702e-06
    q = q * x2 + <float>1.18534705686654e-04
    q = q * x2 + <float>2.26843463243900e-03
    q = q * x2 + <float>4.89352518554385e-03
    return x if fabsf(x) < <float>0.0004 else (p * y) / q

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
