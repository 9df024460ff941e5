# The entry points of the vanilla (min-char-rnn) kernels, compiled once per instruction set in
# the hot modules (_hot.pyx); the buffers' layouts and the types are in _kernels.pxd.

include "_kernels.pxd"

# h_next (B,H) = tanh(Wxh[:, x] + Whh h_prev + bh): one time step for a batch of B rows.
# split: Wt was laid out for one sequence's recurrence in two parts (_split_whh in _vanilla.pxi),
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
