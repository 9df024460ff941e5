# The bf16 mode of the stacked-model kernels (included by _hot.pyx; issue 16). Each matrix
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

cdef inline const floating* _rounded(const floating* src, Py_ssize_t n,
                                     floating* dst) noexcept nogil:
    # dst = src rounded to bfloat16 (float32 models; bf16 mode refuses float64); returns dst
    if floating is float:
        fr_round_bf16(src, n, dst)
    return dst
