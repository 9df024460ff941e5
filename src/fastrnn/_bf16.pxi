# The bf16 mode of the stacked-model kernels (included by _kernels.pyx; issue 16). Each matrix
# product of a chunk (the recurrence, the input projections of layers above the first, the head,
# and BPTT's weight gradients and dL/dh) takes its operands rounded to bfloat16 and sums in
# float32: _stack.pxi rounds the prepared weight copies once per chunk and each activation
# operand into the part's scratch (PartLayout.ra, rh, rs) before its product, then runs the
# float32 tile products (_tiles.h), whose terms are then exact bfloat16 products (see _bf16.h).
# Layer 0's one-hot input stays a float32 gather, and its gradient a float32 scatter-add;
# parameters, optimizer state, the cells' pointwise math, softmax and loss stay float32.
#
# This is the "emulated" path: bfloat16 arithmetic on the float32 units, as fast as float32 at
# best. The machines this was built on expose no AMX (XCR0's tile state off, the kernel refuses
# ARCH_REQ_XCOMP_PERM) and hide AVX512-BF16 from CPUID, so no tile or vdpbf16ps path is built:
# one that no test here can run would be a silently wrong answer waiting on other machines.

cdef extern from "_bf16.h" nogil:
    void fr_round_bf16(const float* src, Py_ssize_t n, float* dst)
    int fr_bf16_cpu()

cdef bint _bf16_as_fp32 = False  # set_bf16_path("fp32"): bf16 mode runs float32 products

BF16_PATHS = ("emulated", "fp32")


cdef inline const floating* _rounded(const floating* src, Py_ssize_t n,
                                     floating* dst) noexcept nogil:
    # dst = src rounded to bfloat16 (float32 models; bf16 mode refuses float64); returns dst
    if floating is float:
        fr_round_bf16(src, n, dst)
    return dst


def bf16_cpu():
    """What this CPU reports of bfloat16 hardware: {"avx512_bf16", "amx_bf16", "amx_os"}
    (CPUID, and whether the OS enables the AMX tile state)."""
    cdef int got = fr_bf16_cpu()
    return {"avx512_bf16": bool(got & 1), "amx_bf16": bool(got & 2), "amx_os": bool(got & 4)}


def bf16_path():
    """How precision="bf16" runs in this process: "emulated" (bfloat16 operands, float32
    accumulation, on the float32 units) or "fp32" (plain float32 products, set by
    set_bf16_path)."""
    return "fp32" if _bf16_as_fp32 else "emulated"


def set_bf16_path(name):
    """Choose how precision="bf16" runs: "emulated" (the default) or "fp32" (plain float32
    products: the fallback, and an A/B switch)."""
    global _bf16_as_fp32
    if name in ("amx", "avx512bf16"):
        raise ValueError(f"bf16 path {name!r} is not built in this version of fastrnn (only "
                         f"{' and '.join(BF16_PATHS)})")
    if name not in BF16_PATHS:
        raise ValueError(f"bf16 path must be one of {', '.join(BF16_PATHS)}, got {name!r}")
    _bf16_as_fp32 = name == "fp32"


def bf16_matmul(A, B):
    """A (M, K) @ B (K, N), float32, as the bf16 mode's products compute it: both operands
    rounded to bfloat16 (unless set_bf16_path("fp32")), products summed in float32."""
    a = np.asarray(A)
    b = np.asarray(B)
    if a.dtype != np.float32 or b.dtype != np.float32 or a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"A and B must be 2-D float32 arrays, got {a.dtype} {a.shape} and "
                         f"{b.dtype} {b.shape}")
    if a.shape[1] != b.shape[0] or a.size == 0 or b.size == 0:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    bpad = np.zeros(K * N + 16, dtype=np.float32)  # rows readable 16 values past N
    bpad[:K * N] = b.reshape(-1)
    cdef float[::1] ar = np.ascontiguousarray(a).reshape(-1).copy()
    cdef float[::1] br = bpad
    out = np.empty((M, N), dtype=np.float32)
    cdef float[:, ::1] c = out
    cdef bint rnd = not _bf16_as_fp32
    with nogil:
        if rnd:
            _rounded(&ar[0], M * K, &ar[0])
            _rounded(&br[0], K * N, &br[0])
        _mm_set(M, N, K, &ar[0], K, 1, &br[0], N, True, &c[0, 0], N)
    return out
