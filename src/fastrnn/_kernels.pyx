"""Compiled kernels of fastrnn: step, forward, BPTT, Adagrad and sampling (see _kernels.pxd).

The `def` functions at the bottom are the only Python-visible entry points. Each one checks every
shape, size and id range first, that no buffer it writes overlaps another one, and that the
hyperparameters survive rounding to the buffers' float type, raising ValueError (TypeError for a
wrong type or None) with a plain message, and only then releases the GIL for the whole chunk.
Matrix products go to the OpenBLAS that scipy ships (through scipy.linalg.cython_blas);
elementwise work is plain loops the compiler vectorises.
"""
from libc.math cimport exp, expf, log, tanh, tanhf, sqrt, sqrtf
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

cdef extern from *:
    int FASTRNN_BUILD_NATIVE
    int FASTRNN_BUILD_DEBUG
    int FASTRNN_BUILD_ASAN

BUILD_NATIVE = bool(FASTRNN_BUILD_NATIVE)
BUILD_DEBUG = bool(FASTRNN_BUILD_DEBUG)
BUILD_ASAN = bool(FASTRNN_BUILD_ASAN)
OPTIMIZERS = {"adagrad": OPT_ADAGRAD}


# ---------------------------------------------------------------------------------------------
# Scalar helpers: one name, float or double libm underneath.

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)

cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


# ---------------------------------------------------------------------------------------------
# BLAS, row-major. BLAS is column-major: a row-major (M,N) matrix is its column-major transpose,
# so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T. This is the only place that swaps.

cdef inline void _gemm(bint trans_a, bint trans_b, int M, int N, int K, floating alpha,
                       const floating* A, int lda, const floating* B, int ldb, floating beta,
                       floating* C, int ldc) noexcept nogil:
    # C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &N, &M, &K, &alpha, <float*>B, &ldb, <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &N, &M, &K, &alpha, <double*>B, &ldb, <double*>A, &lda, &beta, C, &ldc)

cdef inline void _gemv(bint trans, int M, int N, floating alpha, const floating* A,
                       const floating* x, floating beta, floating* y) noexcept nogil:
    # y = alpha * A x + beta * y   (A (M,N) row-major; y (M,)), or with trans: y (N,) = A^T x
    cdef char t = b'N' if trans else b'T'
    cdef int one = 1
    if floating is float:
        sgemv(&t, &N, &M, &alpha, <float*>A, &N, <float*>x, &one, &beta, y, &one)
    else:
        dgemv(&t, &N, &M, &alpha, <double*>A, &N, <double*>x, &one, &beta, y, &one)


# ---------------------------------------------------------------------------------------------
# Kernels (contract in _kernels.pxd)

cdef void step(const floating* P, int H, int V, int B, const int* x, int x_stride,
               const floating* h_prev, floating* h_next) noexcept nogil:
    cdef const floating* Wxh = P
    cdef const floating* Whh = P + <Py_ssize_t>H * V
    cdef const floating* bh = Whh + <Py_ssize_t>H * H + <Py_ssize_t>V * H
    cdef Py_ssize_t b, i
    cdef int xb
    cdef floating* row
    for b in range(B):
        # the one-hot input is a column gather of Wxh
        xb = x[b * x_stride]
        row = h_next + b * H
        for i in range(H):
            row[i] = Wxh[i * V + xb] + bh[i]
    if B == 1:
        _gemv(False, H, H, <floating>1, Whh, h_prev, <floating>1, h_next)
    else:
        _gemm(False, True, B, H, H, <floating>1, h_prev, H, Whh, H, <floating>1, h_next, H)
    for i in range(<Py_ssize_t>B * H):
        h_next[i] = _tanh(h_next[i])


cdef double _softmax_xent(floating* Z, int V, int B, int T, const int* Y) noexcept nogil:
    # Rows of Z are (t, b); turns logits into dZ = softmax - onehot and returns the summed NLL.
    cdef double loss = 0.0
    cdef Py_ssize_t t, b, v
    cdef floating* z
    cdef floating m, s, inv
    cdef int y
    for t in range(T):
        for b in range(B):
            z = Z + (t * B + b) * <Py_ssize_t>V
            y = Y[b * T + t]
            m = z[0]
            for v in range(1, V):
                if z[v] > m:
                    m = z[v]
            loss -= z[y] - m
            s = 0
            for v in range(V):
                z[v] = _exp(z[v] - m)
                s = s + z[v]
            loss += log(s)
            inv = 1 / s
            for v in range(V):
                z[v] = z[v] * inv
            z[y] -= 1
    return loss


cdef double forward(const floating* P, int H, int V, int B, int T, const int* X, const int* Y,
                    floating* hs, floating* Z) noexcept nogil:
    cdef const floating* Why = P + <Py_ssize_t>H * V + <Py_ssize_t>H * H
    cdef const floating* by = Why + <Py_ssize_t>V * H + H
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, t, r
    for t in range(T):
        step(P, H, V, B, X + t, T, hs + t * BH, hs + (t + 1) * BH)
    # logits for the whole chunk: Z (T*B, V) = hs[1:] (T*B, H) @ Why^T + by
    for r in range(<Py_ssize_t>T * B):
        memcpy(Z + r * V, by, V * sizeof(floating))
    _gemm(False, True, T * B, V, H, <floating>1, hs + BH, H, Why, H, <floating>1, Z, V)
    if Y == NULL:
        return 0.0
    return _softmax_xent(Z, V, B, T, Y)


cdef void backward(const floating* P, int H, int V, int B, int T, const int* X,
                   const floating* hs, const floating* dZ, floating* dH, floating* G,
                   floating* dh0) noexcept nogil:
    cdef Py_ssize_t HV = <Py_ssize_t>H * V, BH = <Py_ssize_t>B * H
    cdef Py_ssize_t TB = <Py_ssize_t>T * B, t, b, i, r, v
    cdef const floating* Whh = P + HV
    cdef const floating* Why = Whh + <Py_ssize_t>H * H
    cdef floating* dWxh = G
    cdef floating* dWhh = G + HV
    cdef floating* dWhy = dWhh + <Py_ssize_t>H * H
    cdef floating* dbh = dWhy + HV
    cdef floating* dby = dbh + H
    cdef floating* dh
    cdef const floating* h
    cdef const floating* row
    cdef floating* dst
    cdef floating beta
    cdef int x

    # output layer, whole chunk at once
    _gemm(True, False, V, H, T * B, <floating>1, dZ, V, hs + BH, H, <floating>0, dWhy, H)
    memset(dby, 0, V * sizeof(floating))
    for r in range(TB):
        for v in range(V):
            dby[v] += dZ[r * V + v]
    _gemm(False, False, T * B, H, V, <floating>1, dZ, V, Why, H, <floating>0, dH, H)

    # the recurrence, newest step first: dH[t] becomes dL/d(pre-activation) of step t, and its
    # pull through Whh is added into dH[t-1]
    for t in range(T - 1, -1, -1):
        dh = dH + t * BH
        h = hs + (t + 1) * BH
        for i in range(BH):
            dh[i] = dh[i] * (1 - h[i] * h[i])
        if t > 0:
            dst = dH + (t - 1) * BH
            beta = 1
        elif dh0 != NULL:
            dst = dh0
            beta = 0
        else:
            break
        if B == 1:
            _gemv(True, H, H, <floating>1, Whh, dh, beta, dst)
        else:
            _gemm(False, False, B, H, H, <floating>1, dh, H, Whh, H, beta, dst, H)

    # recurrent weights, whole chunk at once: dWhh = sum_t dhraw_t h_{t-1}^T
    _gemm(True, False, H, H, T * B, <floating>1, dH, H, hs, H, <floating>0, dWhh, H)
    memset(dbh, 0, H * sizeof(floating))
    memset(dWxh, 0, HV * sizeof(floating))
    for t in range(T):
        for b in range(B):
            # the one-hot input's gradient is a scatter-add into one column of Wxh
            x = X[b * T + t]
            row = dH + (t * B + b) * H
            for i in range(H):
                dbh[i] += row[i]
                dWxh[i * V + x] += row[i]


cdef void adagrad(floating* P, const floating* G, floating* M, Py_ssize_t n, floating lr,
                  floating eps, bint do_clip, floating clip) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g
    for i in range(n):
        g = G[i]
        if do_clip:
            if g > clip:
                g = clip
            elif g < -clip:
                g = -clip
        M[i] += g * g
        P[i] -= lr * g / _sqrt(M[i] + eps)


cdef void generate(const floating* P, int H, int V, floating* h, Py_ssize_t n, const double* u,
                   floating temperature, bint greedy, int* out, floating* work) noexcept nogil:
    cdef const floating* Why = P + <Py_ssize_t>H * V + <Py_ssize_t>H * H
    cdef const floating* by = Why + <Py_ssize_t>V * H + H
    cdef floating* z = work
    cdef floating* h_new = work + V
    cdef Py_ssize_t k, v
    cdef floating m
    cdef double total, target, c
    cdef int idx
    for k in range(n):
        memcpy(z, by, V * sizeof(floating))
        _gemv(False, V, H, <floating>1, Why, h, <floating>1, z)
        idx = 0
        m = z[0]
        for v in range(1, V):
            if z[v] > m:
                m = z[v]
                idx = <int>v
        if not greedy:
            total = 0.0
            for v in range(V):
                z[v] = _exp((z[v] - m) / temperature)
                total += z[v]
            # inverse CDF: the first id whose cumulative mass exceeds u * total
            target = u[k] * total
            c = 0.0
            idx = V - 1
            for v in range(V):
                c += z[v]
                if c > target:
                    idx = <int>v
                    break
        out[k] = idx
        step(P, H, V, 1, &idx, 1, h, h_new)
        memcpy(h, h_new, H * sizeof(floating))


# ---------------------------------------------------------------------------------------------
# Python-visible wrappers: validate, then one nogil block.

def num_params(int hidden_size, int vocab_size):
    """Length of the flat parameter buffer Wxh|Whh|Why|bh|by."""
    H, V = hidden_size, vocab_size  # Python ints: no overflow for any C int sizes
    return 2 * H * V + H * H + H + V


def work_size(int batch_size, int seq_length, int hidden_size, int vocab_size):
    """Length of the scratch buffer a chunk of (B,T) needs: hs, Z and dH."""
    B, T, H, V = batch_size, seq_length, hidden_size, vocab_size  # Python ints, as above
    return (T + 1) * B * H + T * B * V + T * B * H


cdef inline void _span(const char** start, Py_ssize_t* nbytes, int k, const void* p,
                       Py_ssize_t n) noexcept:
    start[k] = <const char*>p
    nbytes[k] = n if p != NULL else 0


cdef int _check_disjoint(const char** start, Py_ssize_t* nbytes, int n, int n_written,
                         tuple names) except -1:
    # The first n_written of the n byte ranges [start, start + nbytes) are written by the kernel;
    # none of them may overlap any other range (the kernels assume distinct buffers: memcpy, and
    # reads of values the same call overwrites).
    cdef int i, j
    for i in range(n_written):
        for j in range(i + 1, n):
            if (nbytes[i] > 0 and nbytes[j] > 0 and start[i] < start[j] + nbytes[j]
                    and start[j] < start[i] + nbytes[i]):
                raise ValueError(f"{names[i]} and {names[j]} share memory; the kernels need "
                                 f"separate buffers")
    return 0


cdef int _check_scalar(floating x, double value, str name, bint allow_inf) except -1:
    # `value` was checked positive (and finite unless allow_inf) as a double; x is it rounded to
    # the buffers' type, which must still be positive (and finite): 1e-50 is 0 as a float32,
    # 1e300 is inf.
    if not (x > 0 and (allow_inf or x < <floating>float("inf"))):
        raise ValueError(f"{name}={value!r} is {x!r} as a "
                         f"{'float32' if floating is float else 'float64'}; choose a value the "
                         f"model's dtype can hold")
    return 0


cdef int _check_dims(Py_ssize_t n_params, int H, int V) except -1:
    if H <= 0 or V <= 0:
        raise ValueError(f"hidden_size and vocab_size must be positive, got {H} and {V}")
    if n_params != num_params(H, V):
        raise ValueError(f"params has {n_params} elements, but hidden_size={H} and "
                         f"vocab_size={V} need {num_params(H, V)}")
    return 0


cdef int _check_ids(const int[:, ::1] ids, int V, str name) except -1:
    cdef Py_ssize_t n = ids.shape[0] * ids.shape[1], k, bad = -1
    cdef const int* p
    if n == 0:
        raise ValueError(f"{name} is empty")
    p = &ids[0, 0]
    with nogil:
        for k in range(n):
            if p[k] < 0 or p[k] >= V:
                bad = k
                break
    if bad >= 0:
        raise ValueError(f"{name} holds id {p[bad]} at flat position {bad}; ids must lie in "
                         f"[0, {V}) for vocab_size={V}")
    return 0


cdef int _check_chunk(Py_ssize_t n_params, const int[:, ::1] inputs, const int[:, ::1] targets,
                      Py_ssize_t h_rows, Py_ssize_t h_cols, Py_ssize_t n_work, int H,
                      int V) except -1:
    _check_dims(n_params, H, V)
    _check_ids(inputs, V, "inputs")
    if targets is not None:
        if targets.shape[0] != inputs.shape[0] or targets.shape[1] != inputs.shape[1]:
            raise ValueError(f"targets shape ({targets.shape[0]}, {targets.shape[1]}) does not "
                             f"match inputs shape ({inputs.shape[0]}, {inputs.shape[1]})")
        _check_ids(targets, V, "targets")
    B, T = inputs.shape[0], inputs.shape[1]
    if h_rows != B or h_cols != H:
        raise ValueError(f"h has shape ({h_rows}, {h_cols}); expected (batch, hidden) = ({B}, {H})")
    need = work_size(B, T, H, V)
    if n_work < need:
        raise ValueError(f"work has {n_work} elements; a ({B}, {T}) chunk needs {need}")
    if need >= 2**31:
        raise ValueError(f"chunk too large: {need} scratch elements exceed the 2**31 BLAS limit")
    return 0


def loss_and_grads(const floating[::1] params not None, floating[::1] grads not None,
                   const int[:, ::1] inputs not None, const int[:, ::1] targets,
                   floating[:, ::1] h not None, floating[::1] work not None,
                   int hidden_size, int vocab_size, floating[:, ::1] dh0=None):
    """Forward and BPTT over one (B,T) chunk.

    Overwrites `grads` (unclipped), replaces h (B,H) by the last hidden state, writes dL/dh0 into
    `dh0` if given, and returns the summed cross-entropy.
    """
    cdef int H = hidden_size, V = vocab_size
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef floating* p_dh0 = NULL
    cdef const char* start[7]
    cdef Py_ssize_t nbytes[7]
    if targets is None:
        raise ValueError("targets is required")
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V)
    if grads.shape[0] != params.shape[0]:
        raise ValueError(f"grads has {grads.shape[0]} elements; expected {params.shape[0]}")
    if dh0 is not None:
        if dh0.shape[0] != B or dh0.shape[1] != H:
            raise ValueError(f"dh0 has shape ({dh0.shape[0]}, {dh0.shape[1]}); expected ({B}, {H})")
        p_dh0 = &dh0[0, 0]
    _span(start, nbytes, 0, &grads[0], grads.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 2, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, p_dh0, B * H * sizeof(floating))
    _span(start, nbytes, 4, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 5, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 6, &targets[0, 0], targets.shape[0] * targets.shape[1] * sizeof(int))
    _check_disjoint(start, nbytes, 7, 4,
                    ("grads", "h", "work", "dh0", "params", "inputs", "targets"))
    cdef floating* hs = &work[0]
    cdef floating* Z = hs + (T + 1) * <Py_ssize_t>B * H
    cdef floating* dH = Z + <Py_ssize_t>T * B * V
    with nogil:
        memcpy(hs, &h[0, 0], B * H * sizeof(floating))
        loss = forward(&params[0], H, V, B, T, &inputs[0, 0], &targets[0, 0], hs, Z)
        backward(&params[0], H, V, B, T, &inputs[0, 0], hs, Z, dH, &grads[0], p_dh0)
        memcpy(&h[0, 0], hs + T * <Py_ssize_t>B * H, B * H * sizeof(floating))
    return loss


def forward_loss(const floating[::1] params not None, const int[:, ::1] inputs not None,
                 const int[:, ::1] targets, floating[:, ::1] h not None,
                 floating[::1] work not None, int hidden_size, int vocab_size):
    """Forward only: returns the summed cross-entropy (0.0 if targets is None) and replaces h
    by the last hidden state. Logits (or dZ) stay in work[(T+1)*B*H : (T+1)*B*H + T*B*V]."""
    cdef int H = hidden_size, V = vocab_size
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef const int* p_targets = NULL
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V)
    if targets is not None:
        p_targets = &targets[0, 0]
    _span(start, nbytes, 0, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 1, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 4, p_targets, B * T * sizeof(int))
    _check_disjoint(start, nbytes, 5, 2, ("h", "work", "params", "inputs", "targets"))
    cdef floating* hs = &work[0]
    cdef floating* Z = hs + (T + 1) * <Py_ssize_t>B * H
    with nogil:
        memcpy(hs, &h[0, 0], B * H * sizeof(floating))
        loss = forward(&params[0], H, V, B, T, &inputs[0, 0], p_targets, hs, Z)
        memcpy(&h[0, 0], hs + T * <Py_ssize_t>B * H, B * H * sizeof(floating))
    return loss


cdef int _check_update(Py_ssize_t n, Py_ssize_t n_grads, Py_ssize_t n_mem, double lr, double eps,
                       double clip) except -1:
    if n_grads != n or n_mem != n:
        raise ValueError(f"params, grads and optimizer state must have equal sizes, got "
                         f"{n}, {n_grads} and {n_mem}")
    if not (lr > 0 and lr < float("inf")):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if not (eps > 0 and eps < float("inf")):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    if not (clip > 0):  # also rejects NaN; +inf is allowed and means no clipping
        raise ValueError(f"clip must be positive (or None to disable), got {clip}")
    return 0


def adagrad_update(floating[::1] params not None, const floating[::1] grads not None,
                   floating[::1] mem not None, double lr, double eps, clip):
    """Adagrad step in place; clip=None disables elementwise clipping."""
    cdef double c = float("inf") if clip is None else clip
    cdef const char* start[3]
    cdef Py_ssize_t nbytes[3]
    _check_update(params.shape[0], grads.shape[0], mem.shape[0], lr, eps, c)
    _check_scalar(<floating>lr, lr, "lr", False)
    _check_scalar(<floating>eps, eps, "eps", False)
    _check_scalar(<floating>c, c, "clip", True)
    if params.shape[0] == 0:
        return
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &mem[0], mem.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, &grads[0], grads.shape[0] * sizeof(floating))
    _check_disjoint(start, nbytes, 3, 2, ("params", "mem", "grads"))
    with nogil:
        adagrad(&params[0], &grads[0], &mem[0], params.shape[0], <floating>lr, <floating>eps,
                clip is not None, <floating>c)


def train_step(floating[::1] params not None, floating[::1] grads not None,
               floating[::1] mem not None, const int[:, ::1] inputs not None,
               const int[:, ::1] targets, floating[:, ::1] h not None,
               floating[::1] work not None, int hidden_size, int vocab_size, int optimizer,
               double lr, double eps, clip):
    """One whole training iteration in one call: forward, BPTT, clipping and the optimizer
    update. Replaces h by the last hidden state and returns the summed loss of the chunk."""
    cdef int H = hidden_size, V = vocab_size
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef double c = float("inf") if clip is None else clip
    cdef bint do_clip = clip is not None
    cdef const char* start[7]
    cdef Py_ssize_t nbytes[7]
    if targets is None:
        raise ValueError("targets is required")
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V)
    _check_update(params.shape[0], grads.shape[0], mem.shape[0], lr, eps, c)
    _check_scalar(<floating>lr, lr, "lr", False)
    _check_scalar(<floating>eps, eps, "eps", False)
    _check_scalar(<floating>c, c, "clip", True)
    if optimizer != OPT_ADAGRAD:
        raise ValueError(f"unknown optimizer code {optimizer}")
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &grads[0], grads.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, &mem[0], mem.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 4, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 5, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 6, &targets[0, 0], targets.shape[0] * targets.shape[1] * sizeof(int))
    _check_disjoint(start, nbytes, 7, 5,
                    ("params", "grads", "mem", "h", "work", "inputs", "targets"))
    cdef floating* hs = &work[0]
    cdef floating* Z = hs + (T + 1) * <Py_ssize_t>B * H
    cdef floating* dH = Z + <Py_ssize_t>T * B * V
    with nogil:
        memcpy(hs, &h[0, 0], B * H * sizeof(floating))
        loss = forward(&params[0], H, V, B, T, &inputs[0, 0], &targets[0, 0], hs, Z)
        backward(&params[0], H, V, B, T, &inputs[0, 0], hs, Z, dH, &grads[0], NULL)
        memcpy(&h[0, 0], hs + T * <Py_ssize_t>B * H, B * H * sizeof(floating))
        adagrad(&params[0], &grads[0], &mem[0], params.shape[0], <floating>lr, <floating>eps,
                do_clip, <floating>c)
    return loss


def sample(const floating[::1] params not None, floating[::1] h not None,
           const double[::1] uniforms not None, double temperature, bint greedy,
           int[::1] out not None, floating[::1] work not None, int hidden_size, int vocab_size):
    """Generate len(out) ids from state h (updated in place); see `generate` in _kernels.pxd."""
    cdef int H = hidden_size, V = vocab_size
    cdef Py_ssize_t n = out.shape[0]
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    _check_dims(params.shape[0], H, V)
    if h.shape[0] != H:
        raise ValueError(f"h has {h.shape[0]} elements; expected hidden_size={H}")
    if work.shape[0] < V + H:
        raise ValueError(f"work has {work.shape[0]} elements; sampling needs {V + H}")
    if not greedy:
        if uniforms.shape[0] < n:
            raise ValueError(f"need {n} uniforms, got {uniforms.shape[0]}")
        if not (temperature > 0 and temperature < float("inf")):
            raise ValueError(f"temperature must be positive and finite, got {temperature}")
        _check_scalar(<floating>temperature, temperature, "temperature", False)
    _span(start, nbytes, 0, &h[0], h.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &out[0] if n else NULL, n * sizeof(int))
    _span(start, nbytes, 2, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, &uniforms[0] if uniforms.shape[0] else NULL,
          uniforms.shape[0] * sizeof(double))
    _check_disjoint(start, nbytes, 5, 3, ("h", "out", "work", "params", "uniforms"))
    if n == 0:
        return
    with nogil:
        generate(&params[0], H, V, &h[0], n, &uniforms[0] if not greedy else NULL,
                 <floating>temperature, greedy, &out[0], &work[0])
