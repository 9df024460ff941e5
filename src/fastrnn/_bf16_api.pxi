# The Python-visible side of the bf16 mode (included by _kernels.pyx, the wrapper module): what
# the CPU reports, the path bf16 mode takes (kept per hot module, in its KernelTable), and the
# products as that mode computes them.

BF16_PATHS = ("emulated", "fp32")


def bf16_cpu():
    """What this CPU reports of bfloat16 hardware: {"avx512_bf16", "amx_bf16", "amx_os"}
    (CPUID, and whether the OS enables the AMX tile state)."""
    cdef int got = fr_bf16_cpu()
    return {"avx512_bf16": bool(got & 1), "amx_bf16": bool(got & 2), "amx_os": bool(got & 4)}


def bf16_path():
    """How precision="bf16" runs in this process: "emulated" (bfloat16 operands, float32
    accumulation, on the float32 units) or "fp32" (plain float32 products, set by
    set_bf16_path)."""
    return "fp32" if _table().bf16_as_fp32 else "emulated"


def set_bf16_path(name):
    """Choose how precision="bf16" runs: "emulated" (the default) or "fp32" (plain float32
    products: the fallback, and an A/B switch)."""
    if name in ("amx", "avx512bf16"):
        raise ValueError(f"bf16 path {name!r} is not built in this version of fastrnn (only "
                         f"{' and '.join(BF16_PATHS)})")
    if name not in BF16_PATHS:
        raise ValueError(f"bf16 path must be one of {', '.join(BF16_PATHS)}, got {name!r}")
    _table().bf16_as_fp32 = name == "fp32"  # (set_bf16_path("fp32"): float32 products)


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
    cdef KernelTable* t = _table()
    cdef bint rnd = not t.bf16_as_fp32
    with nogil:
        t.bf16_matmul(M, N, K, &ar[0], &br[0], &c[0, 0], rnd)
    return out
