# The kernel contract of fastrnn: the types the kernels (fastrnn._hot*, see _hot.pyx and the
# entry points declared in _hot.pxd) and their Python wrappers (fastrnn._kernels) share.
#
# Every kernel works on raw pointers into caller-owned, C-contiguous buffers and never allocates,
# raises or touches a Python object: the `def` wrappers in _kernels.pyx check shapes, dtypes and id
# ranges, then call these inside one `with nogil:` block.
#
# Parameters (and gradients, and optimizer state) live in ONE flat buffer, row-major:
#     P = Wxh (H,V) | Whh (H,H) | Why (V,H) | bh (H,) | by (V,)
# Ids are int32, laid out (B,T) row-major: X[b*T + t].
# A chunk's work buffer starts with Wt, transposed copies of the recurrent and output weights
# in rows padded with zeros (see _prepare in _vanilla.pxi), then holds activations, time-major so
# that each step's batch is one contiguous (B,H) block:
#     hs (T+1,B,H)  hs[0] = h0, hs[t+1] = h_t
#     Z  (T,B,V)    logits; turned into dZ = softmax - onehot when targets are given
#     dH (S+1,B,H)  dL/dh_t for a block of S time steps (S = T unless that would take too much
#                   memory: _block_steps), turned into dL/d(pre-activation) in place, and the
#                   gradient carried from one block into the one before
#     dXT (V,H)     the input weights' gradient, transposed
#     scratch       H rounded up to 16 values: the padded vector of one sequence's backward step
# A chunk split over threads has hs, Z and dH per group of rows, and a gradient buffer for
# every group but the first (see _chunk in _split.pxi); one sequence split into slices of its
# hidden units keeps these buffers once, and its scratch vector is followed by 2 * slices - 1
# more: each slice's partial sums of BPTT, for two time steps in turn (_one_sequence).

ctypedef fused floating:
    float
    double

# Optimizer codes understood by `update`.
cdef enum Optimizer:
    OPT_ADAGRAD = 0
    OPT_SGD = 1
    OPT_RMSPROP = 2
    OPT_ADAM = 3

# One optimizer update's settings, filled by the Python wrappers (validated there).
cdef struct UpdateConfig:
    int optimizer         # an Optimizer code
    double lr, eps
    double beta1          # Adam: decay of the first moment
    double beta2          # Adam: decay of the second moment; RMSprop: decay of the mean square
    double step           # Adam: this update's index t >= 1, for the bias corrections
    double grad_scale     # gradients are first multiplied by this (1/tokens for a mean loss)
    double clip_norm      # > 0: rescale so the global L2 norm is at most clip_norm; 0: off
    bint do_clip          # then clip each element to [-clip, clip]
    double clip
