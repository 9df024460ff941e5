# The kernel contract of fastrnn.
#
# Every kernel works on raw pointers into caller-owned, C-contiguous buffers and never allocates,
# raises or touches a Python object: the `def` wrappers in _kernels.pyx check shapes, dtypes and id
# ranges, then call these inside one `with nogil:` block.
#
# Parameters (and gradients, and optimizer state) live in ONE flat buffer, row-major:
#     P = Wxh (H,V) | Whh (H,H) | Why (V,H) | bh (H,) | by (V,)
# Ids are int32, laid out (B,T) row-major: X[b*T + t].
# A chunk's work buffer starts with Wt, transposed copies of the recurrent and output weights
# in rows padded with zeros (see _prepare in _kernels.pyx), then holds activations, time-major so
# that each step's batch is one contiguous (B,H) block:
#     hs (T+1,B,H)  hs[0] = h0, hs[t+1] = h_t
#     Z  (T,B,V)    logits; turned into dZ = softmax - onehot when targets are given
#     dH (S+1,B,H)  dL/dh_t for a block of S time steps (S = T unless that would take too much
#                   memory: _block_steps), turned into dL/d(pre-activation) in place, and the
#                   gradient carried from one block into the one before
#     dXT (V,H)     the input weights' gradient, transposed
#     scratch       H rounded up to 16 values: the padded vector of one sequence's backward step
# A chunk split over threads has hs, Z and dH per group of rows, and a gradient buffer for
# every group but the first (see _chunk in _kernels.pyx); one sequence split into slices of its
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

# h_next (B,H) = tanh(Wxh[:, x] + Whh h_prev + bh): one time step for a batch of B rows.
# split: Wt was laid out for one sequence's recurrence in two parts (_split_whh in _kernels.pyx),
# and h_next already holds Wxh[:, x] + bh (forward gathers every step's input first).
cdef void step(const floating* P, int H, int V, int B, const int* x, int x_stride,
               const floating* Wt, bint split, const floating* h_prev,
               floating* h_next) noexcept nogil

# Recurrence over T steps, then all T*B logits in one matrix product. With targets Y (not NULL)
# returns the summed cross-entropy (natural log) and leaves dZ in Z; with Y NULL returns 0.
cdef double forward(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                    const floating* Wt, bint split, floating* hs, floating* Z) noexcept nogil

# BPTT over the chunk; overwrites the gradient buffer G (same layout as P). dh0 (B,H), if not
# NULL, receives dL/dh0. Weight gradients are one matrix product per tensor for the whole chunk.
cdef void backward(const floating* P, int H, int V, int B, int T, const int* X,
                   const floating* Wt, bint split, const floating* hs, const floating* dZ,
                   floating* dH, floating* G, floating* dh0, floating* dXT) noexcept nogil

# The optimizer step over n parameters, one pass after an optional norm pass. Each gradient
# element becomes g = G[i] * grad_scale * (clip_norm / (norm + 1e-6) when that is < 1), then is
# clipped to [-clip, clip]; then, with state M (and S) shaped like P:
#   adagrad  M += g*g;                         P -= lr * g / sqrt(M + eps)
#   sgd                                        P -= lr * g
#   rmsprop  M = beta2*M + (1-beta2)*g*g;      P -= lr * g / (sqrt(M) + eps)
#   adam     M = beta1*M + (1-beta1)*g;  S = beta2*S + (1-beta2)*g*g;
#            P -= lr * (M / (1-beta1^t)) / (sqrt(S / (1-beta2^t)) + eps)
# G is left unchanged. Returns the L2 norm of G * grad_scale when clip_norm is on, else -1.
# float32 Adagrad in the AVX2 and AVX-512 builds takes 1/sqrt(M + eps) from the CPU's estimate
# refined by Newton steps (_adagrad.h): M as above bit for bit, P to within about 1e-7 of
# the step; the same value for an element wherever n's range starts.
cdef double update(floating* P, const floating* G, floating* M, floating* S, Py_ssize_t n,
                   const UpdateConfig* cfg) noexcept nogil

# Draws n ids starting from state h (updated in place): logits = Why h + by; greedy takes the
# argmax; otherwise the masses exp((logits - max) / temperature) of all but the top_k highest
# logits (top_k 0: keep all; ties go to the lower id) are zeroed, then all but the smallest
# prefix of the rest, in that order, whose mass reaches top_p of theirs (top_p 1: keep all);
# then the id is the first whose cumulative mass, in id order, exceeds u[k] times the kept total.
# Then h steps on that id. An infinite highest logit gives mass 1 to each logit equal to it and
# 0 to the others. work holds sample_work_size(H, V) scratch values, order V ints. Returns -1, or
# the k at which the logits held a NaN (weights that overflow), stopping there.
cdef Py_ssize_t generate(const floating* P, int H, int V, floating* h, Py_ssize_t n,
                         const double* u, floating temperature, bint greedy, int top_k,
                         double top_p, int* out, floating* work, int* order) noexcept nogil
