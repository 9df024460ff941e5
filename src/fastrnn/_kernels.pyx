"""Compiled kernels of fastrnn: step, forward, BPTT, optimizers and sampling (see _kernels.pxd).

The `def` functions at the bottom are the only Python-visible entry points. Each one checks every
shape, size and id range first (the ids in a copy of its own, which the kernel then reads), that
no buffer it writes overlaps another one, and that the hyperparameters survive rounding to the
buffers' float type, raising ValueError (TypeError for a wrong type or None) with a plain
message, and only then releases the GIL for the whole chunk.
Matrix products are register-tiled loops (_tiles.h); elementwise work is plain loops the
compiler vectorises. A batch large enough is split over threads with OpenMP (see _chunk).
"""
from libc.math cimport INFINITY, copysignf, exp, fabsf, floor, log, sqrt, sqrtf, tanh
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel, prange

from operator import index as _index
from cpython.long cimport PyLong_AsLongLongAndOverflow

import numpy as np

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
    """
    int FASTRNN_BUILD_OPENMP
    int FASTRNN_BUILD_NATIVE
    int FASTRNN_BUILD_DEBUG
    const char* FASTRNN_BUILD_ISA
    int FASTRNN_BUILD_ASAN

BUILD_NATIVE = bool(FASTRNN_BUILD_NATIVE)
BUILD_DEBUG = bool(FASTRNN_BUILD_DEBUG)
BUILD_ASAN = bool(FASTRNN_BUILD_ASAN)
BUILD_OPENMP = bool(FASTRNN_BUILD_OPENMP)  # False: threads > 1 runs the parts one after another
BUILD_ISA = "native" if BUILD_NATIVE else FASTRNN_BUILD_ISA.decode()
OPTIMIZERS = {"adagrad": OPT_ADAGRAD, "sgd": OPT_SGD, "rmsprop": OPT_RMSPROP, "adam": OPT_ADAM}


# The kernels, split along their seams, each file included here in this order (Cython needs one
# module per instruction set, so they are one compilation unit):
include "_math.pxi"          # elementwise math: exp, tanh, sums
include "_products.pxi"      # register-tiled matrix products (_tiles.h), transposes
include "_vanilla.pxi"       # min-char-rnn's model: step, forward, BPTT
include "_split.pxi"         # a chunk split over threads: batch parts, one sequence's team
include "_optim.pxi"         # optimizers: clipping, Adagrad/SGD/RMSprop/Adam, guarded steps
include "_sample.pxi"        # sampling: top-k ranking, generate
include "_api.pxi"           # Python-visible wrappers: checks, then one nogil block
include "_cells.pxi"         # stacked models: each cell's pointwise forward/backward
include "_bf16.pxi"          # stacked models: the bf16 mode's rounding
include "_stack.pxi"         # stacked models: the chunk driver
include "_stack_sample.pxi"  # stacked models: sampling
include "_stack_api.pxi"     # stacked models: Python-visible wrappers
include "_beam.pxi"          # beam search, every model
