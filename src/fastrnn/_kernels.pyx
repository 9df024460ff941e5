"""Compiled kernels of fastrnn, the Python-visible side: every wrapper and check (see
_kernels.pxd for the buffers' layouts and _hot.pxd for the kernel contract).

The `def` functions are the only Python-visible entry points. Each one checks every shape, size
and id range first (the ids in a copy of its own, which the kernel then reads), that no buffer it
writes overlaps another one, and that the hyperparameters survive rounding to the buffers' float
type, raising ValueError (TypeError for a wrong type or None) with a plain message, and only
then releases the GIL for the whole chunk.

This module is compiled once; the kernels it calls (step, forward, BPTT, optimizers, sampling)
are compiled per instruction set in the hot modules (_hot.pyx: fastrnn._hot, _hot_avx2,
_hot_avx512), and it binds at import to the one $FASTRNN_ISA names, else the best one this CPU
runs (fastrnn._isa); bound(hot) gives these functions on another one. BUILD_ISA, BUILD_OPENMP,
BUILD_NATIVE, BUILD_DEBUG and BUILD_ASAN say how the bound hot module was built, HOT which it is.
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

OPTIMIZERS = {"adagrad": OPT_ADAGRAD, "sgd": OPT_SGD, "rmsprop": OPT_RMSPROP, "adam": OPT_ADAM}


# The kernels' files, included for the sizes and layouts the checks compute (inline functions)
# and the types; the kernels themselves run in a hot module (_hot.pyx, built per instruction
# set), reached through _shims.pxi, so the compiler drops the copies here (nothing calls them).
include "_math.pxi"
include "_products.pxi"
include "_vanilla.pxi"
include "_split.pxi"
include "_optim.pxi"
include "_sample.pxi"
include "_cells.pxi"
include "_bf16.pxi"
include "_stack.pxi"
include "_stack_sample.pxi"
include "_beam.pxi"
include "_table.pxi"         # the hot modules' KernelTable
include "_shims.pxi"         # k_<kernel>: the calls through it; binding to a hot module
# The Python-visible wrappers: checks, then one nogil block
include "_api.pxi"           # min-char-rnn's model
include "_stack_api.pxi"     # stacked models
include "_bf16_api.pxi"      # the bf16 mode's path
include "_beam_api.pxi"      # beam search, every model

from fastrnn._isa import hot_module as _hot_module
_bind_default(_hot_module())  # $FASTRNN_ISA, else the best one this CPU runs
