# Part of _kernels.pyx, the wrapper module (compiled once; the kernels it calls are in the hot
# modules, through _shims.pxi).
# ---------------------------------------------------------------------------------------------
# Python-visible wrappers: validate, then one nogil block.

def num_params(int hidden_size, int vocab_size):
    """Length of the flat parameter buffer Wxh|Whh|Why|bh|by."""
    H, V = hidden_size, vocab_size  # Python ints: no overflow for any C int sizes
    return 2 * H * V + H * H + H + V


def work_size(int batch_size, int seq_length, int hidden_size, int vocab_size, threads=1):
    """Length of the scratch buffer a chunk of (B,T) needs: the recurrent and output weights
    transposed (rows of H or V values padded to a multiple of 16, plus 16 when that is a multiple
    of 128), then hs with 16 values of slack, Z, dH (which holds a
    block of time steps and a carried (B,H) gradient: see _block_steps) and a (V,H) gradient.
    With `threads` > 1 a large enough chunk is split into parts (see chunk_parts): hs, Z, dH and
    the (V,H) gradient for each part's rows, then a gradient buffer for every part but the
    first. One sequence split into slices of its hidden units keeps one part's buffers, whose
    last vector (H padded to a multiple of 16) is followed by 2 * slices - 1 more: each slice's
    partial sums of BPTT, for two time steps in turn."""
    B, T, H, V = batch_size, seq_length, hidden_size, vocab_size  # Python ints: no overflow
    Hp = -(-H // 16) * 16  # _padded(H)
    parts = chunk_parts(B, T, H, V, threads)
    slices = 1
    if B == 1:  # slices of one sequence (see _one_sequence)
        slices, parts = parts, 1
    total = H * _transposed_ld(H) + H * _transposed_ld(V) + (parts - 1) * num_params(H, V) + \
        ((2 * slices - 1) * Hp if slices > 1 else 0)
    for p in range(parts):
        Bp = B // parts + (1 if p < B % parts else 0)
        steps = _block_steps(Bp, T, H, V) if (Bp + H + V) * T * H < 2**62 else T
        total += (T + 1) * Bp * H + WORK_SLACK + T * Bp * V + (steps + 1) * Bp * H + V * H + Hp
    return total


def chunk_parts(int batch_size, int seq_length, int hidden_size, int vocab_size, threads=1):
    """Into how many groups of rows, each on its own thread, a (B,T) chunk is split when the
    kernels may use `threads` threads: at most `threads` (and 64), each part at least one row and
    about 2**20 multiply-adds of work (a smaller part costs more to hand to a thread than it
    saves). Rows are split in order into parts whose sizes differ by at most one.

    One sequence (B=1) with H >= 512 is split instead into slices of its hidden units, at most
    `threads` and each at least 256 units, whose threads take every time step together."""
    return _chunk_parts(batch_size, seq_length, hidden_size, vocab_size, threads)


cdef int _chunk_parts(int B, int T, int H, int V, object threads) except -1:
    # chunk_parts, without a Python call (the wrappers ask at every call)
    cdef int n = _as_int(threads, "threads")
    if n < 1:
        raise ValueError(f"threads must be a positive integer, got {n}")
    if B <= 0 or T <= 0 or H <= 0 or V < 0:
        return 1
    # T*H*(H+V) must stay below 2**62 (_n_parts multiplies them in C): it does when all three
    # are below 2**20; else it is checked in (exact) Python ints
    if not (T < 2**20 and H < 2**20 and V < 2**20):
        if <object>T * H * (<object>H + V) >= 2**62:
            return 1
    return _n_parts(B, T, H, V, n)


def sample_work_size(int hidden_size, int vocab_size):
    """Length of the scratch buffer `sample` needs: the three weight matrices transposed, then
    logits and a state with room to be placed clear of the matrices (see _clear_of), then room
    for V cumulative masses in double on a 64-byte line (2 * V values, V padded to a multiple of
    16, and 16 more)."""
    H, V = hidden_size, vocab_size  # Python ints: no overflow
    Hp, Vp = -(-H // 16) * 16, -(-V // 16) * 16  # rows padded to a multiple of 16 (_padded)
    return V * Hp + H * Hp + H * Vp + SCRATCH_SLACK + Vp + Hp + 2 * Vp + 16


cdef int _as_int(object value, str name) except? -1:
    # A C int argument would take a float and truncate it (1.5 -> 1): integers only (anything
    # with __index__: Python and numpy integers, bools), and within a C int's range
    cdef int overflow = 0
    cdef long long v
    if type(value) is int:  # the usual case, without a call to operator.index
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow and -2**31 <= v < 2**31:
            return <int>v
    try:
        i = _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if not (-2**31 <= i < 2**31):
        raise OverflowError(f"{name}={i} does not fit a C int")
    return i


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
    if not (x > 0 and (allow_inf or x < <floating>INFINITY)):
        raise ValueError(f"{name}={value!r} is {x!r} as a "
                         f"{'float32' if floating is float else 'float64'}; choose a value the "
                         f"model's dtype can hold")
    return 0


cdef int _check_dims(Py_ssize_t n_params, int H, int V) except -1:
    if H <= 0 or V <= 0:
        raise ValueError(f"hidden_size and vocab_size must be positive, got {H} and {V}")
    cdef Py_ssize_t need
    if H < 2**30 and V < 2**30:  # num_params in C: 2HV + H^2 + H + V < 2**62
        need = 2 * <Py_ssize_t>H * V + <Py_ssize_t>H * H + H + V
        if n_params == need:
            return 0
    if n_params != num_params(H, V):
        raise ValueError(f"params has {n_params} elements, but hidden_size={H} and "
                         f"vocab_size={V} need {num_params(H, V)}")
    return 0


# The chunk wrappers copy the ids (inputs, then targets) into memory of the call's own, check
# them there, and the kernel reads that copy: another Python thread may write the caller's arrays
# while the kernel runs without the GIL, and an id the kernel indexes with must be one that was
# checked. A chunk of up to IDS_ON_STACK ids in all is copied onto the C stack (a trainer's
# usual chunk: no allocation), a larger one into an _Ids.
cdef enum:
    IDS_ON_STACK = 1024


cdef class _Ids:
    cdef int* data

    def __dealloc__(self):
        free(self.data)


cdef _Ids _ids_room(const int[:, ::1] inputs, bint with_targets):
    # None when the ids fit on the stack
    cdef Py_ssize_t n = inputs.shape[0] * inputs.shape[1] * (2 if with_targets else 1)
    if n <= IDS_ON_STACK:
        return None
    cdef _Ids ids = _Ids.__new__(_Ids)
    ids.data = <int*>malloc(n * sizeof(int))
    if ids.data == NULL:
        raise MemoryError(f"no memory for a copy of {n} ids")
    return ids


cdef int _check_ids(const int[:, ::1] ids, int V, str name, int* copy) except -1:
    # copies the ids into `copy`, then checks the copy
    cdef Py_ssize_t n = ids.shape[0] * ids.shape[1], k, bad = -1
    if n == 0:
        raise ValueError(f"{name} is empty")
    with nogil:
        memcpy(copy, &ids[0, 0], n * sizeof(int))
        for k in range(n):
            if copy[k] < 0 or copy[k] >= V:
                bad = k
                break
    if bad >= 0:
        raise ValueError(f"{name} holds id {copy[bad]} at flat position {bad}; ids must lie in "
                         f"[0, {V}) for vocab_size={V}")
    return 0


cdef Py_ssize_t _last_chunk[6]  # B, T, H, V, threads and work_size of the last chunk checked
_last_chunk[0] = -1


cdef int _check_chunk(Py_ssize_t n_params, const int[:, ::1] inputs, const int[:, ::1] targets,
                      Py_ssize_t h_rows, Py_ssize_t h_cols, Py_ssize_t n_work, int H,
                      int V, int threads, int* ids) except -1:
    # also copies inputs and targets into `ids`, where the kernel is to read them
    cdef Py_ssize_t B = inputs.shape[0], T = inputs.shape[1]
    _check_dims(n_params, H, V)
    _check_ids(inputs, V, "inputs", ids)
    if targets is not None:
        if targets.shape[0] != inputs.shape[0] or targets.shape[1] != inputs.shape[1]:
            raise ValueError(f"targets shape ({targets.shape[0]}, {targets.shape[1]}) does not "
                             f"match inputs shape ({inputs.shape[0]}, {inputs.shape[1]})")
        _check_ids(targets, V, "targets", ids + B * T)
    if h_rows != B or h_cols != H:
        raise ValueError(f"h has shape ({h_rows}, {h_cols}); expected (batch, hidden) = ({B}, {H})")
    cdef Py_ssize_t need
    if (_last_chunk[0] == B and _last_chunk[1] == T and _last_chunk[2] == H
            and _last_chunk[3] == V and _last_chunk[4] == threads):
        need = _last_chunk[5]  # (a trainer's every call)
    else:  # work_size, in exact Python ints, took 1/80 of a min-char call
        found = work_size(B, T, H, V, threads)
        if found >= 2**62:
            raise ValueError(f"chunk too large: {found} scratch elements exceed the kernels' "
                             f"2**31 limit")
        need = found
        _last_chunk[0], _last_chunk[1], _last_chunk[2] = B, T, H
        _last_chunk[3], _last_chunk[4], _last_chunk[5] = V, threads, need
    if n_work < need:
        raise ValueError(f"work has {n_work} elements; a ({B}, {T}) chunk needs {need}")
    if need >= 2**31:
        raise ValueError(f"chunk too large: {need} scratch elements exceed the kernels' 2**31 "
                         f"limit")
    return 0


def loss_and_grads(const floating[::1] params not None, floating[::1] grads not None,
                   const int[:, ::1] inputs not None, const int[:, ::1] targets,
                   floating[:, ::1] h not None, floating[::1] work not None,
                   hidden_size, vocab_size, floating[:, ::1] dh0=None, threads=1):
    """Forward and BPTT over one (B,T) chunk.

    Overwrites `grads` (unclipped), replaces h (B,H) by the last hidden state, writes dL/dh0 into
    `dh0` if given, and returns the summed cross-entropy. `threads`: the most threads the
    chunk may be split over (see chunk_parts).
    """
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef floating* p_dh0 = NULL
    cdef const char* start[7]
    cdef Py_ssize_t nbytes[7]
    if targets is None:
        raise ValueError("targets is required")
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, True)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
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
    with nogil:
        loss = k_chunk(&params[0], H, V, B, T, ids, ids + <Py_ssize_t>B * T, &h[0, 0],
                       &work[0], &grads[0], p_dh0, parts, NULL, <floating*>NULL, <floating*>NULL,
                       False, <floating*>NULL, NULL)
        k_last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    return loss


def forward_loss(const floating[::1] params not None, const int[:, ::1] inputs not None,
                 const int[:, ::1] targets, floating[:, ::1] h not None,
                 floating[::1] work not None, hidden_size, vocab_size, threads=1):
    """Forward only: returns the summed cross-entropy (0.0 if targets is None) and replaces h
    by the last hidden state."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef const int* p_targets = NULL
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, targets is not None)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
    if targets is not None:
        p_targets = &targets[0, 0]
    _span(start, nbytes, 0, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 1, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 4, p_targets, B * T * sizeof(int))
    _check_disjoint(start, nbytes, 5, 2, ("h", "work", "params", "inputs", "targets"))
    with nogil:
        loss = k_chunk(&params[0], H, V, B, T, ids,
                       ids + <Py_ssize_t>B * T if p_targets != NULL else NULL, &h[0, 0],
                       &work[0], NULL, NULL, parts, NULL, <floating*>NULL, <floating*>NULL, False,
                       <floating*>NULL, NULL)
        k_last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    return loss


cdef int _make_config(UpdateConfig* cfg, Py_ssize_t n, Py_ssize_t n_grads, Py_ssize_t n_state1,
                      Py_ssize_t n_state2, int optimizer, double lr, double eps, object clip,
                      double beta1, double beta2, double step, object clip_norm,
                      double grad_scale) except -1:
    # n_state1/n_state2: sizes of the optimizer state buffers, -1 where None was passed
    cdef double inf = INFINITY
    cdef double c = inf if clip is None else clip
    cdef double cn = inf if clip_norm is None else clip_norm
    if optimizer not in (OPT_ADAGRAD, OPT_SGD, OPT_RMSPROP, OPT_ADAM):
        raise ValueError(f"unknown optimizer code {optimizer}")
    if n_grads != n:
        raise ValueError(f"params and grads must have equal sizes, got {n} and {n_grads}")
    cdef int k
    cdef Py_ssize_t size
    for k in range(2):
        size = n_state1 if k == 0 else n_state2
        if (optimizer != OPT_SGD if k == 0 else optimizer == OPT_ADAM) and size != n:
            raise ValueError(f"optimizer state {k + 1} has "
                             f"{'no buffer' if size < 0 else f'{size} elements'}; expected {n}")
    if not (lr > 0 and lr < inf):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    if not (eps > 0 and eps < inf):
        raise ValueError(f"eps must be a positive finite number, got {eps}")
    if not (c > 0):  # also rejects NaN; +inf is allowed and means no clipping
        raise ValueError(f"clip must be positive (or None to disable), got {clip}")
    if not (cn > 0):
        raise ValueError(f"clip_norm must be positive (or None to disable), got {clip_norm}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"beta1 and beta2 must lie in [0, 1), got {beta1} and {beta2}")
    if not (step >= 1 and step == floor(step) and step < inf):
        raise ValueError(f"step must be a positive integer, got {step}")
    if not (grad_scale > 0 and grad_scale < inf):
        raise ValueError(f"grad_scale must be a positive finite number, got {grad_scale}")
    cfg.optimizer = optimizer
    cfg.lr, cfg.eps, cfg.beta1, cfg.beta2, cfg.step = lr, eps, beta1, beta2, step
    cfg.grad_scale = grad_scale
    cfg.clip_norm = cn if cn < inf else 0.0
    cfg.do_clip = c < inf
    cfg.clip = c
    return 0


cdef inline Py_ssize_t _size(const floating[::1] a):
    return -1 if a is None else a.shape[0]


cdef inline floating* _ptr(floating[::1] a):
    return NULL if a is None or a.shape[0] == 0 else &a[0]


cdef int _check_update_scalars(floating x, double lr, double eps, object clip,
                               object clip_norm, double grad_scale) except -1:
    # the hyperparameters must survive rounding to the buffers' float type (x only picks it)
    _check_scalar(<floating>lr, lr, "lr", False)
    _check_scalar(<floating>eps, eps, "eps", False)
    cdef double c
    if clip is not None:
        c = clip
        _check_scalar(<floating>c, c, "clip", True)
    if clip_norm is not None:
        c = clip_norm
        _check_scalar(<floating>c, c, "clip_norm", True)
    _check_scalar(<floating>grad_scale, grad_scale, "grad_scale", False)
    return 0


cdef inline floating* _state_ptr(floating[::1] a, bint used):
    # an optimizer state buffer the optimizer does not use is neither read nor written (nor
    # checked for size or overlap): the kernel gets NULL
    return _ptr(a) if used else NULL


def optimizer_update(floating[::1] params not None, const floating[::1] grads not None,
                     floating[::1] state1, floating[::1] state2, optimizer, double lr,
                     double eps=1e-8, clip=None, double beta1=0.9, double beta2=0.999,
                     double step=1, clip_norm=None, double grad_scale=1.0):
    """One optimizer step in place (see `update` in _hot.pxd); `optimizer` is a code from
    OPTIMIZERS. state1 is Adagrad's/RMSprop's memory or Adam's first moment, state2 Adam's second
    (None where unused). Returns the gradient norm when clip_norm is given, else -1."""
    cdef UpdateConfig cfg
    cdef double norm
    cdef const char* start[4]
    cdef Py_ssize_t nbytes[4]
    cdef int opt = _as_int(optimizer, "optimizer")
    _make_config(&cfg, params.shape[0], grads.shape[0], _size(state1), _size(state2), opt,
                 lr, eps, clip, beta1, beta2, step, clip_norm, grad_scale)
    _check_update_scalars(<floating>0, lr, eps, clip, clip_norm, grad_scale)
    if params.shape[0] == 0:
        return -1.0
    cdef floating* p_state1 = _state_ptr(state1, opt != OPT_SGD)
    cdef floating* p_state2 = _state_ptr(state2, opt == OPT_ADAM)
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, p_state1, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 2, p_state2, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &grads[0], grads.shape[0] * sizeof(floating))
    _check_disjoint(start, nbytes, 4, 3, ("params", "state1", "state2", "grads"))
    with nogil:
        norm = k_update(&params[0], &grads[0], p_state1, p_state2, params.shape[0], &cfg)
    return norm


def adagrad_update(floating[::1] params not None, const floating[::1] grads not None,
                   floating[::1] mem not None, double lr, double eps, clip):
    """Adagrad step in place; clip=None disables elementwise clipping."""
    optimizer_update(params, grads, mem, None, OPT_ADAGRAD, lr, eps, clip)


def train_step(floating[::1] params not None, floating[::1] grads not None, floating[::1] mem,
               const int[:, ::1] inputs not None, const int[:, ::1] targets,
               floating[:, ::1] h not None, floating[::1] work not None, hidden_size,
               vocab_size, optimizer, double lr, double eps, clip,
               floating[::1] mem2=None, double beta1=0.9, double beta2=0.999, double step=1,
               clip_norm=None, double grad_scale=1.0, floating[::1] undo=None, threads=1):
    """One whole training iteration in one call: forward, BPTT, clipping and the optimizer
    update (the arguments after `optimizer` as in `optimizer_update`; mem and mem2 are its state
    1 and 2). Replaces h by the last hidden state and returns the summed loss of the chunk.

    With `undo` (scratch of undo_size(n, optimizer) values, possibly none) the step is
    guarded: when the loss is not finite nothing is updated, and when the update leaves a
    non-finite value in params or the optimizer state (a NaN or infinite gradient, an overflow)
    it is undone exactly, from the old values it saved in `grads` and `undo` as it went (grads
    then holds no gradient). A step not taken leaves params, mem, mem2 and h as they were.
    Returns (loss, taken) then. `threads`: as in loss_and_grads; a chunk split over threads is
    updated on them too, each on its range of the parameters (a norm for clip_norm is then
    summed by range)."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef int B = inputs.shape[0], T = inputs.shape[1]
    cdef double loss
    cdef UpdateConfig cfg
    cdef const char* start[9]
    cdef Py_ssize_t nbytes[9]
    cdef int opt = _as_int(optimizer, "optimizer")
    cdef bint taken = True
    if targets is None:
        raise ValueError("targets is required")
    cdef int parts = _chunk_parts(B, T, H, V, threads)
    cdef int ids_on_stack[IDS_ON_STACK]
    cdef _Ids ids_on_heap = _ids_room(inputs, True)
    cdef int* ids = &ids_on_stack[0] if ids_on_heap is None else ids_on_heap.data
    _check_chunk(params.shape[0], inputs, targets, h.shape[0], h.shape[1], work.shape[0], H, V,
                 parts, ids)
    _make_config(&cfg, params.shape[0], grads.shape[0], _size(mem), _size(mem2), opt, lr,
                 eps, clip, beta1, beta2, step, clip_norm, grad_scale)
    _check_update_scalars(<floating>0, lr, eps, clip, clip_norm, grad_scale)
    if undo is not None and undo.shape[0] < undo_size(params.shape[0], opt):
        raise ValueError(f"undo has {undo.shape[0]} elements; this optimizer needs "
                         f"{undo_size(params.shape[0], opt)}")
    _span(start, nbytes, 0, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &grads[0], grads.shape[0] * sizeof(floating))
    cdef floating* p_mem = _state_ptr(mem, opt != OPT_SGD)
    cdef floating* p_mem2 = _state_ptr(mem2, opt == OPT_ADAM)
    _span(start, nbytes, 2, p_mem, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, p_mem2, params.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 5, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 6, _ptr(undo), _size(undo) * sizeof(floating))
    _span(start, nbytes, 7, &inputs[0, 0], inputs.shape[0] * inputs.shape[1] * sizeof(int))
    _span(start, nbytes, 8, &targets[0, 0], targets.shape[0] * targets.shape[1] * sizeof(int))
    _check_disjoint(start, nbytes, 9, 7,
                    ("params", "grads", "mem", "mem2", "h", "work", "undo", "inputs", "targets"))
    cdef floating* p_undo = _ptr(undo)
    cdef bint guarded = undo is not None
    # one sequence split over threads: the step is taken by the team that ran the chunk
    cdef bint in_team = B == 1 and parts > 1
    cdef int bad[MAX_PARTS]
    cdef int q
    for q in range(MAX_PARTS):
        bad[q] = 0
    with nogil:
        loss = k_chunk(&params[0], H, V, B, T, ids, ids + <Py_ssize_t>B * T, &h[0, 0],
                       &work[0], &grads[0], NULL, parts, &cfg if in_team else NULL, p_mem, p_mem2,
                       guarded, p_undo, bad)
        if in_team:
            if not guarded:
                k_last_state(&work[0], H, V, B, T, parts, &h[0, 0])
            else:  # (a non-finite loss: no step taken)
                taken = loss - loss == 0
                for q in range(parts):
                    taken = taken and not bad[q]
        elif not guarded:
            k_last_state(&work[0], H, V, B, T, parts, &h[0, 0])
            if parts > 1:  # on as many threads as ran the chunk
                k_update_split(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], H, V, B,
                               parts, &cfg, False, NULL)
            else:
                k_update(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], &cfg)
        elif loss - loss == 0:
            # a non-finite loss (x - x is NaN for NaN and +-inf) takes no step; nor does an
            # update that leaves a non-finite value
            if parts > 1:
                taken = k_update_split(&params[0], &grads[0], p_mem, p_mem2, params.shape[0], H,
                                       V, B, parts, &cfg, True, p_undo)
            else:
                taken = k_update_guarded(&params[0], &grads[0], p_mem, p_mem2, params.shape[0],
                                         &cfg, p_undo)
        else:
            taken = False
        if guarded and taken:
            k_last_state(&work[0], H, V, B, T, parts, &h[0, 0])
    if guarded:
        return loss, taken
    return loss


def undo_size(Py_ssize_t n_params, int optimizer):
    """Length of the `undo` scratch of a guarded train_step: room for each buffer of the
    optimizer's state (the old parameters go into `grads`)."""
    return n_params * ((optimizer != OPT_SGD) + (optimizer == OPT_ADAM))


cdef object _nan_logits_error(Py_ssize_t k, str dtype):
    # every compiled sampler's error where the logits of the k-th id hold NaN (the words of
    # fastrnn.backends.numpy_backend.nan_logits_message)
    return FloatingPointError(f"the logits hold NaN at generated id {k}: the parameters overflow "
                              f"{dtype} in this state, so there is no distribution to sample from")


def sample(const floating[::1] params not None, floating[::1] h not None,
           const double[::1] uniforms not None, double temperature, bint greedy,
           int[::1] out not None, floating[::1] work not None, hidden_size, vocab_size,
           top_k=0, double top_p=1.0):
    """Generate len(out) ids from state h (updated in place); see `generate` in _hot.pxd.
    Raises FloatingPointError where the logits hold a NaN (out and h then hold what was drawn
    and reached before that id)."""
    cdef int H = _as_int(hidden_size, "hidden_size"), V = _as_int(vocab_size, "vocab_size")
    cdef Py_ssize_t n = out.shape[0]
    cdef const char* start[5]
    cdef Py_ssize_t nbytes[5]
    cdef int k = _as_int(top_k, "top_k")
    _check_dims(params.shape[0], H, V)
    if h.shape[0] != H:
        raise ValueError(f"h has {h.shape[0]} elements; expected hidden_size={H}")
    if work.shape[0] < sample_work_size(H, V):
        raise ValueError(f"work has {work.shape[0]} elements; sampling needs "
                         f"{sample_work_size(H, V)}")
    if k < 0:
        raise ValueError(f"top_k must be >= 0 (0: off), got {k}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if not greedy:
        if uniforms.shape[0] < n:
            raise ValueError(f"need {n} uniforms, got {uniforms.shape[0]}")
        if not (temperature > 0 and temperature < INFINITY):
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
    cdef int[::1] order = np.empty(V, dtype=np.intc)
    cdef Py_ssize_t stopped
    with nogil:
        stopped = k_generate(&params[0], H, V, &h[0], n, &uniforms[0] if not greedy else NULL,
                             <floating>temperature, greedy, k, top_p, &out[0], &work[0],
                             &order[0])
    if stopped >= 0:
        raise _nan_logits_error(stopped, "float32" if floating is float else "float64")
