# The kernel contract of fastrnn.
#
# Every kernel works on raw pointers into caller-owned, C-contiguous buffers and never allocates,
# raises or touches a Python object: the `def` wrappers in _kernels.pyx check shapes, dtypes and id
# ranges, then call these inside one `with nogil:` block.
#
# Parameters (and gradients, and optimizer state) live in ONE flat buffer, row-major:
#     P = Wxh (H,V) | Whh (H,H) | Why (V,H) | bh (H,) | by (V,)
# Ids are int32, laid out (B,T) row-major: X[b*T + t].
# Activations are time-major so that each step's batch is one contiguous (B,H) block:
#     hs (T+1,B,H)  hs[0] = h0, hs[t+1] = h_t
#     Z  (T,B,V)    logits; turned into dZ = softmax - onehot when targets are given
#     dH (T,B,H)    dL/dh_t, turned into dL/d(pre-activation) in place; for large batches only
#                   two (B,H) blocks, the weight gradients then summed step by step (_by_step)
#     scratch       H + SCRATCH_SLACK values: one vector of the B=1 backward recurrence

ctypedef fused floating:
    float
    double

# Optimizer codes understood by `update`.
cdef enum Optimizer:
    OPT_ADAGRAD = 0

# h_next (B,H) = tanh(Wxh[:, x] + Whh h_prev + bh): one time step for a batch of B rows.
cdef void step(const floating* P, int H, int V, int B, const int* x, int x_stride,
               const floating* h_prev, floating* h_next) noexcept nogil

# Recurrence over T steps, then all T*B logits in one matrix product. With targets Y (not NULL)
# returns the summed cross-entropy (natural log) and leaves dZ in Z; with Y NULL returns 0.
cdef double forward(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                    floating* hs, floating* Z) noexcept nogil

# BPTT over the chunk; overwrites the gradient buffer G (same layout as P). dh0 (B,H), if not
# NULL, receives dL/dh0. Weight gradients are one matrix product per tensor for the whole chunk.
# scratch holds H + SCRATCH_SLACK values.
cdef void backward(const floating* P, int H, int V, int B, int T, const int* X,
                   const floating* hs, const floating* dZ, floating* dH, floating* G,
                   floating* dh0, floating* scratch) noexcept nogil

# Min-char-rnn Adagrad over n parameters: optional elementwise clip to [-clip, clip], then
# M += g*g; P -= lr * g / sqrt(M + eps). G is left unclipped.
cdef void adagrad(floating* P, const floating* G, floating* M, Py_ssize_t n, floating lr,
                  floating eps, bint do_clip, floating clip) noexcept nogil

# Draws n ids starting from state h (updated in place): logits = Why h + by, pick an id (argmax,
# or inverse-CDF with the uniform u[k] over softmax(logits / temperature)), then step on it.
# work holds sample_work_size(H, V) scratch values.
cdef void generate(const floating* P, int H, int V, floating* h, Py_ssize_t n, const double* u,
                   floating temperature, bint greedy, int* out, floating* work) noexcept nogil
