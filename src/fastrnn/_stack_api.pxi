# Python-visible entry points of the stacked models (included by _kernels.pyx): check every
# argument, then one nogil block (_stack.pxi, _stack_sample.pxi). Cell codes: 0 rnn, 1 lstm,
# 2 gru; the layout is fastrnn._layout's (ModelSpec), whose offsets table the caller passes and
# which must be that model's. Ids are copied before they are checked, so a caller's thread
# changing them cannot make the kernel read out of bounds.

cdef dict _stack_specs = {}  # (cell, relu, H, V, L) -> (offsets, n, rd_ih, rd_hh, rd_why)
_CELL_NAMES = ("rnn", "lstm", "gru")


cdef int _stack_int(object value, str name) except? -1:
    # _as_int, with a value past a C int a ValueError like any other bad size
    try:
        return _as_int(value, name)
    except OverflowError as exc:
        raise ValueError(str(exc)) from None


cdef tuple _stack_spec(object cell, object relu, object hidden_size, object vocab_size,
                       object num_layers, bint chunk=False):
    # the model's checked layout: its offsets table (read-only), len(params), and whether each
    # weight matrix's rows can be read 16 values past their end inside params (see _mm).
    # chunk: for the chunk kernels, which also run min-char-rnn's model in bf16 mode
    cdef int cl = _stack_int(cell, "cell"), rl = _stack_int(relu, "relu")
    cdef int H = _stack_int(hidden_size, "H"), V = _stack_int(vocab_size, "V")
    cdef int L = _stack_int(num_layers, "L")
    key = (cl, rl, H, V, L)
    got = _stack_specs.get(key)
    if got is not None and (chunk or not got[5]):
        return got
    if cl not in (CELL_RNN, CELL_LSTM, CELL_GRU):
        raise ValueError(f"cell must be 0 (rnn), 1 (lstm) or 2 (gru), got {cl}")
    if rl not in (0, 1):
        raise ValueError(f"relu must be 0 or 1, got {rl}")
    if rl and cl != CELL_RNN:
        raise ValueError("relu is for cell 0 (rnn) only")
    if H < 1 or V < 1 or L < 1:
        raise ValueError(f"H, V and L must be positive, got {H}, {V} and {L}")
    if cl == CELL_RNN and not rl and L == 1 and not chunk:
        raise ValueError("the one-layer tanh rnn is min-char-rnn's model: its kernels are "
                         "loss_and_grads, train_step and sample")
    from fastrnn._layout import ModelSpec
    spec = ModelSpec(_CELL_NAMES[cl], V, H, L, "relu" if rl else "tanh")
    table = np.ascontiguousarray(spec.offsets(), dtype=np.int64)
    table.setflags(write=False)
    n = spec.num_params
    GH = spec.gates * H
    at = [int(v) for v in table]
    rd_ih = bytes([at[4 * k] + GH * (V if k == 0 else H) + 16 <= n for k in range(L)])
    rd_hh = bytes([at[4 * k + 1] + GH * H + 16 <= n for k in range(L)])
    rd_why = at[4 * L] + V * H + 16 <= n
    if n >= 2**40 or (V + 3 * H + 64) * (GH + 64) * (L + 1) >= 2**50:
        raise ValueError(f"model too large for the kernels: {n} parameters")
    got = (table, n, rd_ih, rd_hh, rd_why, spec.legacy)
    if len(_stack_specs) >= 64:
        _stack_specs.clear()
    _stack_specs[key] = got
    return got


cdef int _stack_model(StackModel* m, tuple got, object cell, object relu, object H, object V,
                      object L) except -1:
    cdef const int64_t[::1] table = got[0]
    cdef const unsigned char[::1] rd_ih = got[2]
    cdef const unsigned char[::1] rd_hh = got[3]
    m.cell, m.relu = cell, relu
    m.H, m.V, m.L = H, V, L
    m.G = _cell_gates(m.cell)
    m.n = got[1]
    m.off = &table[0]
    m.rd_ih = <const char*>&rd_ih[0]
    m.rd_hh = <const char*>&rd_hh[0]
    m.rd_why = got[4]
    m.bf16 = False
    return 0


cdef int _check_offsets(object offsets, tuple got) except -1:
    if offsets is None:
        raise TypeError("offsets must be an int64 array (ModelSpec.offsets()), got None")
    a = np.asarray(offsets)
    if a.dtype != np.int64 or a.ndim != 1:
        raise ValueError(f"offsets must be a 1-D int64 array, got {a.dtype} with shape "
                         f"{a.shape}")
    if a.shape != got[0].shape or not np.array_equal(a, got[0]):
        raise ValueError("offsets do not match the layout of this (cell, H, V, L): pass "
                         "ModelSpec.offsets() of the same model")
    return 0


cdef object _stack_ids(object ids, int V, str name, object shape):
    # a private int32 copy of a 2-D array of ids, checked to lie in [0, V)
    if ids is None:
        raise TypeError(f"{name} must be a 2-D integer array, got None")
    a = np.array(ids, copy=True)
    if a.dtype.kind not in "iu" or a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D integer array, got {a.dtype} with shape "
                         f"{a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} shape {a.shape} does not match inputs shape {shape}")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi >= V:
        raise ValueError(f"{name} holds id {lo if lo < 0 else hi}; ids must lie in [0, {V}) "
                         f"for V={V}")
    return np.ascontiguousarray(a, dtype=np.intc)


cdef int _stack_parts(object threads, int B) except -1:
    cdef int n = _stack_int(threads, "threads")
    if n < 1:
        raise ValueError(f"threads must be a positive integer, got {n}")
    return max(1, min(n, B, MAX_PARTS))


cdef int _check_state(str name, object a, int L, int B, int H, bint wanted) except -1:
    # a state-shaped array (L, B, H) or None; wanted: whether this cell has it
    if a is None:
        return 0
    if not wanted:
        raise ValueError(f"{name} is for lstm only (cell 1); pass None")
    if tuple(a.shape[:3]) != (L, B, H):
        raise ValueError(f"{name} has shape {tuple(a.shape[:3])}; expected (L, B, H) = "
                         f"({L}, {B}, {H})")
    return 0


def stack_work_size(batch_size, seq_length, hidden_size, vocab_size, num_layers, cell,
                    threads=1, bf16=False):
    """Length of the scratch buffer the stack kernels need for a (B, T) chunk of this model
    with at most `threads` threads (see _stack.pxi for its layout), in bf16 mode or not."""
    cdef int B = _stack_int(batch_size, "B"), T = _stack_int(seq_length, "T")
    if B < 1 or T < 1:
        raise ValueError(f"B and T must be positive, got {B} and {T}")
    cdef int relu = 1 if _stack_int(cell, "cell") == CELL_RNN else 0  # (no legacy check here)
    got = _stack_spec(cell, relu, hidden_size, vocab_size, num_layers, True)
    cdef StackModel m
    _stack_model(&m, got, cell, relu, hidden_size, vocab_size, num_layers)
    m.bf16 = bool(bf16)
    cdef int parts = _stack_parts(threads, B)
    if (<object>B + 1) * (T + 2) * (m.V + (4 * m.G + 8) * m.H + 64) * (m.L + 1) + \
            parts * m.n >= 2**60:
        raise ValueError(f"chunk too large: ({B}, {T}) for this model")
    return _stack_work(&m, B, T, parts)


cdef tuple _stack_prologue(StackModel* m, object offsets, object cell, object relu, object H,
                           object V, object L, object inputs, object targets, bint need_targets,
                           Py_ssize_t n_params, object h, object c, object threads,
                           Py_ssize_t n_work, object bf16, bint is_float):
    # the checks every chunk entry point shares; returns (X, Y or None, parts, the layout the
    # caller keeps alive while the kernel reads m.off)
    got = _stack_spec(cell, relu, H, V, L, True)
    _stack_model(m, got, cell, relu, H, V, L)
    if bf16 and not is_float:
        raise ValueError("bf16 mode needs float32 parameters and buffers, got float64")
    if got[5] and not bf16:
        raise ValueError("the one-layer tanh rnn is min-char-rnn's model: its kernels are "
                         "loss_and_grads, train_step and sample (or these in bf16 mode)")
    m.bf16 = bool(bf16) and not _table().bf16_as_fp32
    _check_offsets(offsets, got)
    if n_params != m.n:
        raise ValueError(f"params has {n_params} elements; this model needs {m.n}")
    X = _stack_ids(inputs, m.V, "inputs", None)
    cdef int B = X.shape[0], T = X.shape[1]
    Y = None
    if targets is not None:
        Y = _stack_ids(targets, m.V, "targets", X.shape)
    elif need_targets:
        raise ValueError("targets is required")
    if h is None:
        raise TypeError("h must be an array (L, B, H), got None")
    _check_state("h", h, m.L, B, m.H, True)
    if m.cell == CELL_LSTM and c is None:
        raise ValueError("an lstm needs its cell state c (L, B, H)")
    _check_state("c", c, m.L, B, m.H, m.cell == CELL_LSTM)
    cdef int parts = _stack_parts(threads, B)
    need = stack_work_size(B, T, m.H, m.V, m.L, m.cell, parts, m.bf16)
    if n_work < need:
        raise ValueError(f"work has {n_work} elements; a ({B}, {T}) chunk needs {need}")
    return X, Y, parts, got


cdef int _stack_masks(const StackModel* m, object masks, int B, int T) except -1:
    if masks is None:
        return 0
    if tuple(masks.shape[:4]) != (m.L - 1, B, T, m.H):
        raise ValueError(f"masks has shape {tuple(masks.shape[:4])}; expected (L-1, B, T, H) "
                         f"= ({m.L - 1}, {B}, {T}, {m.H})")
    return 0


def stack_forward_loss(const floating[::1] params not None, offsets, cell, relu, H, V, L,
                       inputs, targets, floating[:, :, ::1] h, floating[:, :, ::1] c,
                       floating[::1] work not None, threads=1, bf16=False):
    """Forward over a (B, T) chunk: returns the summed cross-entropy (0.0 without targets) and
    replaces h (and c, lstm) (L, B, H) by the state after the last step. bf16: the products
    take bfloat16-rounded operands (_bf16.pxi; float32 only)."""
    cdef StackModel m
    X, Y, parts, got = _stack_prologue(&m, offsets, cell, relu, H, V, L, inputs, targets, False,
                                  params.shape[0], h, c, threads, work.shape[0], bf16,
                                  floating is float)
    cdef const int[:, ::1] xv = X
    cdef const int[:, ::1] yv = Y
    cdef int B = xv.shape[0], T = xv.shape[1], np_ = parts
    cdef double loss
    cdef const char* start[4]
    cdef Py_ssize_t nbytes[4]
    cdef floating* pc = &c[0, 0, 0] if c is not None else NULL
    _span(start, nbytes, 0, &h[0, 0, 0], h.shape[0] * h.shape[1] * h.shape[2] * sizeof(floating))
    _span(start, nbytes, 1, pc, h.shape[0] * h.shape[1] * h.shape[2] * sizeof(floating))
    _span(start, nbytes, 2, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 3, &params[0], params.shape[0] * sizeof(floating))
    _check_disjoint(start, nbytes, 4, 3, ("h", "c", "work", "params"))
    cdef const int* py = &yv[0, 0] if Y is not None else NULL
    with nogil:
        loss = k_stack_chunk(&m, &params[0], B, T, &xv[0, 0], py, &h[0, 0, 0], pc, NULL,
                             &work[0], NULL, NULL, NULL, np_)
        k_stack_last_state(&m, &work[0], B, T, np_, &h[0, 0, 0], pc)
    return loss


cdef const floating* _mask_ptr(const floating[:, :, :, ::1] masks) noexcept:
    if masks is None or masks.shape[0] == 0:
        return NULL
    return &masks[0, 0, 0, 0]


def stack_loss_and_grads(const floating[::1] params not None, floating[::1] grads not None,
                         offsets, cell, relu, H, V, L, inputs, targets,
                         floating[:, :, ::1] h, floating[:, :, ::1] c,
                         const floating[:, :, :, ::1] masks, floating[:, :, ::1] dh0,
                         floating[:, :, ::1] dc0, floating[::1] work not None, threads=1,
                         bf16=False):
    """Forward and BPTT over a (B, T) chunk: SETS grads (the whole buffer, padding zero,
    unclipped), replaces h (and c) (L, B, H) by the state after the last step, writes
    dL/d(initial h) into dh0 and dL/d(initial c) into dc0 (L, B, H) when given, and returns
    the summed cross-entropy. masks (L-1, B, T, H): each layer's output but the last is
    multiplied by its mask before it feeds the next layer (None: no dropout). bf16: as in
    stack_forward_loss."""
    cdef StackModel m
    X, Y, parts, got = _stack_prologue(&m, offsets, cell, relu, H, V, L, inputs, targets, True,
                                  params.shape[0], h, c, threads, work.shape[0], bf16,
                                  floating is float)
    cdef const int[:, ::1] xv = X
    cdef const int[:, ::1] yv = Y
    cdef int B = xv.shape[0], T = xv.shape[1], np_ = parts
    cdef double loss
    if grads.shape[0] != params.shape[0]:
        raise ValueError(f"grads has {grads.shape[0]} elements; expected {params.shape[0]}")
    _stack_masks(&m, masks, B, T)
    _check_state("dh0", dh0, m.L, B, m.H, True)
    _check_state("dc0", dc0, m.L, B, m.H, m.cell == CELL_LSTM)
    cdef Py_ssize_t sb = <Py_ssize_t>m.L * B * m.H * sizeof(floating)
    cdef floating* pc = &c[0, 0, 0] if c is not None else NULL
    cdef floating* pdh = &dh0[0, 0, 0] if dh0 is not None else NULL
    cdef floating* pdc = &dc0[0, 0, 0] if dc0 is not None else NULL
    cdef const floating* pm = _mask_ptr(masks)
    cdef const char* start[8]
    cdef Py_ssize_t nbytes[8]
    _span(start, nbytes, 0, &grads[0], grads.shape[0] * sizeof(floating))
    _span(start, nbytes, 1, &h[0, 0, 0], sb)
    _span(start, nbytes, 2, pc, sb)
    _span(start, nbytes, 3, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, pdh, sb)
    _span(start, nbytes, 5, pdc, sb)
    _span(start, nbytes, 6, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 7, pm, (m.L - 1) * <Py_ssize_t>B * T * m.H * sizeof(floating))
    _check_disjoint(start, nbytes, 8, 6, ("grads", "h", "c", "work", "dh0", "dc0", "params",
                                          "masks"))
    with nogil:
        loss = k_stack_chunk(&m, &params[0], B, T, &xv[0, 0], &yv[0, 0], &h[0, 0, 0], pc, pm,
                             &work[0], &grads[0], pdh, pdc, np_)
        k_stack_last_state(&m, &work[0], B, T, np_, &h[0, 0, 0], pc)
    return loss


def stack_train_step(floating[::1] params not None, floating[::1] grads not None,
                     floating[::1] mem, offsets, cell, relu, H, V, L, inputs, targets,
                     floating[:, :, ::1] h, floating[:, :, ::1] c,
                     const floating[:, :, :, ::1] masks, floating[::1] work not None, threads,
                     optimizer, double lr, double eps, clip, floating[::1] mem2=None,
                     double beta1=0.9, double beta2=0.999, double step=1, clip_norm=None,
                     double grad_scale=1.0, floating[::1] undo=None, bf16=False):
    """One training iteration in one call: stack_loss_and_grads, then the optimizer step of
    optimizer_update over the whole flat buffer (mem, mem2: its state 1 and 2). Returns the
    summed loss; with `undo` (undo_size(n, optimizer) values) the step is guarded as in
    train_step: not taken when the loss or an updated value is not finite (then params, mem,
    mem2, h and c are left as they were and grads holds the old params), and (loss, taken) is
    returned. bf16: as in stack_forward_loss."""
    cdef StackModel m
    X, Y, parts, got = _stack_prologue(&m, offsets, cell, relu, H, V, L, inputs, targets, True,
                                  params.shape[0], h, c, threads, work.shape[0], bf16,
                                  floating is float)
    cdef const int[:, ::1] xv = X
    cdef const int[:, ::1] yv = Y
    cdef int B = xv.shape[0], T = xv.shape[1], np_ = parts
    cdef double loss
    cdef UpdateConfig cfg
    cdef int opt = _stack_int(optimizer, "optimizer")
    cdef bint taken = True
    cdef bint guarded = undo is not None
    _stack_masks(&m, masks, B, T)
    _make_config(&cfg, params.shape[0], grads.shape[0], _size(mem), _size(mem2), opt, lr,
                 eps, clip, beta1, beta2, step, clip_norm, grad_scale)
    _check_update_scalars(<floating>0, lr, eps, clip, clip_norm, grad_scale)
    if guarded and undo.shape[0] < undo_size(params.shape[0], opt):
        raise ValueError(f"undo has {undo.shape[0]} elements; this optimizer needs "
                         f"{undo_size(params.shape[0], opt)}")
    cdef Py_ssize_t sb = <Py_ssize_t>m.L * B * m.H * sizeof(floating)
    cdef Py_ssize_t n = params.shape[0]
    cdef floating* pc = &c[0, 0, 0] if c is not None else NULL
    cdef const floating* pm = _mask_ptr(masks)
    cdef floating* p_mem = _state_ptr(mem, opt != OPT_SGD)
    cdef floating* p_mem2 = _state_ptr(mem2, opt == OPT_ADAM)
    cdef floating* p_undo = _ptr(undo)
    cdef const char* start[9]
    cdef Py_ssize_t nbytes[9]
    _span(start, nbytes, 0, &params[0], n * sizeof(floating))
    _span(start, nbytes, 1, &grads[0], n * sizeof(floating))
    _span(start, nbytes, 2, p_mem, n * sizeof(floating))
    _span(start, nbytes, 3, p_mem2, n * sizeof(floating))
    _span(start, nbytes, 4, &h[0, 0, 0], sb)
    _span(start, nbytes, 5, pc, sb)
    _span(start, nbytes, 6, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 7, p_undo, _size(undo) * sizeof(floating))
    _span(start, nbytes, 8, pm, (m.L - 1) * <Py_ssize_t>B * T * m.H * sizeof(floating))
    _check_disjoint(start, nbytes, 9, 8, ("params", "grads", "mem", "mem2", "h", "c", "work",
                                          "undo", "masks"))
    with nogil:
        loss = k_stack_chunk(&m, &params[0], B, T, &xv[0, 0], &yv[0, 0], &h[0, 0, 0], pc, pm,
                             &work[0], &grads[0], NULL, NULL, np_)
        if not guarded:
            k_stack_update(&params[0], &grads[0], p_mem, p_mem2, n, &cfg, False, NULL, np_)
        elif loss - loss == 0:  # (NaN and +-inf give NaN: no step on a non-finite loss)
            taken = k_stack_update(&params[0], &grads[0], p_mem, p_mem2, n, &cfg, True, p_undo,
                                   np_)
        else:
            taken = False
        if taken:
            k_stack_last_state(&m, &work[0], B, T, np_, &h[0, 0, 0], pc)
    if guarded:
        return loss, taken
    return loss


def stack_sample_work_size(hidden_size, vocab_size, num_layers, cell):
    """Length of the scratch buffer stack_sample needs."""
    cdef int relu = 1 if _stack_int(cell, "cell") == CELL_RNN else 0
    got = _stack_spec(cell, relu, hidden_size, vocab_size, num_layers)
    cdef StackModel m
    _stack_model(&m, got, cell, relu, hidden_size, vocab_size, num_layers)
    return _stack_sample_work(m.H, m.V, m.G)


def stack_sample(const floating[::1] params not None, offsets, cell, relu, H, V, L,
                 floating[:, ::1] h, floating[:, ::1] c, const double[::1] uniforms not None,
                 double temperature, bint greedy, int[::1] out not None,
                 floating[::1] work not None, top_k=0, double top_p=1.0, threads=1):
    """Generate len(out) ids from state h (and c, lstm) (L, H), updated in place: the id rule
    of `sample` (see generate in _hot.pxd) on the stacked model's step. `threads`: each
    step's products split over that many threads (the same ids for any number)."""
    cdef StackModel m
    got = _stack_spec(cell, relu, H, V, L)
    _stack_model(&m, got, cell, relu, H, V, L)
    _check_offsets(offsets, got)
    cdef Py_ssize_t n = out.shape[0]
    cdef int k = _stack_int(top_k, "top_k")
    cdef int nt = _stack_parts(threads, MAX_PARTS)
    if params.shape[0] != m.n:
        raise ValueError(f"params has {params.shape[0]} elements; this model needs {m.n}")
    if h is None:
        raise TypeError("h must be an array (L, H), got None")
    if h.shape[0] != m.L or h.shape[1] != m.H:
        raise ValueError(f"h has shape ({h.shape[0]}, {h.shape[1]}); expected (L, H) = "
                         f"({m.L}, {m.H})")
    if m.cell == CELL_LSTM:
        if c is None:
            raise ValueError("an lstm needs its cell state c (L, H)")
        if c.shape[0] != m.L or c.shape[1] != m.H:
            raise ValueError(f"c has shape ({c.shape[0]}, {c.shape[1]}); expected (L, H) = "
                             f"({m.L}, {m.H})")
    elif c is not None:
        raise ValueError("c is for lstm only (cell 1); pass None")
    if work.shape[0] < _stack_sample_work(m.H, m.V, m.G):
        raise ValueError(f"work has {work.shape[0]} elements; sampling needs "
                         f"{_stack_sample_work(m.H, m.V, m.G)}")
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
    cdef floating* pc = &c[0, 0] if c is not None else NULL
    cdef const char* start[6]
    cdef Py_ssize_t nbytes[6]
    _span(start, nbytes, 0, &h[0, 0], h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 1, pc, h.shape[0] * h.shape[1] * sizeof(floating))
    _span(start, nbytes, 2, &out[0] if n else NULL, n * sizeof(int))
    _span(start, nbytes, 3, &work[0], work.shape[0] * sizeof(floating))
    _span(start, nbytes, 4, &params[0], params.shape[0] * sizeof(floating))
    _span(start, nbytes, 5, &uniforms[0] if uniforms.shape[0] else NULL,
          uniforms.shape[0] * sizeof(double))
    _check_disjoint(start, nbytes, 6, 4, ("h", "c", "out", "work", "params", "uniforms"))
    if n == 0:
        return
    cdef int[::1] order = np.empty(m.V, dtype=np.intc)
    cdef Py_ssize_t stopped
    with nogil:
        stopped = k_stack_generate(&m, &params[0], &h[0, 0], pc, n,
                                   &uniforms[0] if not greedy else NULL, <floating>temperature,
                                   greedy, k, top_p, &out[0], &work[0], &order[0], nt)
    if stopped >= 0:
        raise _nan_logits_error(stopped, "float32" if floating is float else "float64")
