"""The kernels of fastrnn, built once per instruction set: fastrnn._hot (baseline, or the
FASTRNN_NATIVE / FASTRNN_DEBUG / FASTRNN_ASAN build), _hot_avx2 and _hot_avx512 (see setup.py).

Only the nogil code is here: step, forward, BPTT, the optimizers and the samplers, which
work on raw pointers and never touch a Python object. Their Python wrappers, which check every
argument first, are fastrnn._kernels (_kernels.pyx), compiled once; they call these through the
KernelTable (_table.pxi) this module hands out as TABLE, a capsule. Nothing here is meant to be
called from Python: import fastrnn._kernels (or fastrnn.backends.cython_backend.load_kernels).
"""
from libc.math cimport INFINITY, copysignf, exp, fabsf, floor, log, sqrt, sqrtf, tanh
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel, prange
from cpython.pycapsule cimport PyCapsule_New

cdef extern from *:
    """
    #ifndef FASTRNN_BUILD_ISA
    #define FASTRNN_BUILD_ISA "baseline"
    #endif
    #ifdef _OPENMP
    #define FASTRNN_BUILD_OPENMP 1
    #else
    #define FASTRNN_BUILD_OPENMP 0
    #endif
    #if FASTRNN_BUILD_NATIVE
    #define FASTRNN_BUILD_ISA_NAME "native"
    #else
    #define FASTRNN_BUILD_ISA_NAME FASTRNN_BUILD_ISA
    #endif
    """
    int FASTRNN_BUILD_OPENMP
    int FASTRNN_BUILD_NATIVE
    int FASTRNN_BUILD_DEBUG
    const char* FASTRNN_BUILD_ISA_NAME
    int FASTRNN_BUILD_ASAN


# The kernels, split along their seams, each file included here in this order (Cython needs one
# module per instruction set, so they are one compilation unit). _kernels.pyx includes them too,
# for the sizes and layouts its checks compute (inline functions); the kernels themselves it
# only reaches through TABLE, so its compiler drops them.
include "_math.pxi"          # elementwise math: exp, tanh, sums
include "_products.pxi"      # register-tiled matrix products (_tiles.h), transposes
include "_vanilla.pxi"       # min-char-rnn's model: step, forward, BPTT
include "_split.pxi"         # a chunk split over threads: batch parts, one sequence's team
include "_optim.pxi"         # optimizers: clipping, Adagrad/SGD/RMSprop/Adam, guarded steps
include "_sample.pxi"        # sampling: top-k ranking, generate
include "_cells.pxi"         # stacked models: each cell's pointwise forward/backward
include "_bf16.pxi"          # stacked models: the bf16 mode's rounding
include "_stack.pxi"         # stacked models: the chunk driver
include "_stack_sample.pxi"  # stacked models: sampling
include "_beam.pxi"          # beam search, every model
include "_table.pxi"         # the table of the above that the wrappers call


cdef void _bf16_matmul(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, float* A, float* B, float* C,
                       bint rnd) noexcept nogil:
    # bf16_matmul's product (B's rows readable 16 values past N), as the bf16 mode takes it
    if rnd:
        _rounded(A, M * K, A)
        _rounded(B, K * N, B)
    _mm_set(M, N, K, A, K, 1, B, N, True, C, N)


cdef KernelTable _table
_table.version = TABLE_VERSION
_table.size = sizeof(KernelTable)
_table.isa = FASTRNN_BUILD_ISA_NAME
_table.native, _table.debug = FASTRNN_BUILD_NATIVE, FASTRNN_BUILD_DEBUG
_table.asan, _table.openmp = FASTRNN_BUILD_ASAN, FASTRNN_BUILD_OPENMP
_table.bf16_as_fp32 = False
_table.chunk_f, _table.chunk_d = _chunk[float], _chunk[double]
_table.last_state_f, _table.last_state_d = _last_state[float], _last_state[double]
_table.update_f, _table.update_d = update[float], update[double]
_table.update_guarded_f = update_guarded[float]
_table.update_guarded_d = update_guarded[double]
_table.update_split_f, _table.update_split_d = _update_split[float], _update_split[double]
_table.generate_f, _table.generate_d = generate[float], generate[double]
_table.stack_chunk_f, _table.stack_chunk_d = _stack_chunk[float], _stack_chunk[double]
_table.stack_last_state_f = _stack_last_state[float]
_table.stack_last_state_d = _stack_last_state[double]
_table.stack_update_f, _table.stack_update_d = _stack_update[float], _stack_update[double]
_table.stack_generate_f = _stack_generate[float]
_table.stack_generate_d = _stack_generate[double]
_table.beam_search_f, _table.beam_search_d = _beam_search[float], _beam_search[double]
_table.bf16_matmul = _bf16_matmul

TABLE = PyCapsule_New(&_table, "fastrnn._hot.KernelTable", NULL)
