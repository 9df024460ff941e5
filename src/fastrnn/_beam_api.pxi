# The Python-visible entry point of beam search (included by _kernels.pyx, the wrapper module):
# check every argument, then one nogil call of _beam_search (_beam.pxi, in the hot module).


cdef tuple _legacy_spec(object H, object V):
    # min-char-rnn's model as the beam's one-layer tanh rnn: its checked offsets table (Wxh,
    # Whh, bh, no b_hh, Why, by), len(params) and the rows' read-past flags (see _stack_spec);
    # H, V: checked Python ints, so no product here overflows
    n = 2 * H * V + H * H + H + V
    whh, why = H * V, H * V + H * H
    table = np.array([0, whh, why + V * H, -1, why, why + V * H + H], dtype=np.int64)
    table.setflags(write=False)
    return (table, n, bytes([V * H + 16 <= n]), bytes([whh + H * H + 16 <= n]),
            why + V * H + 16 <= n)


def beam_search(const floating[::1] params not None, offsets, cell, relu, H, V, L,
                floating[:, ::1] h not None, floating[:, ::1] c, n, beam, bint legacy=False):
    """(ids (n,) int32, mean log-probability per id) of the best of `beam` hypotheses grown
    from the state h (and c, lstm) (L, H), left unchanged; see the numpy backend's
    beam_search. legacy: min-char-rnn's model (cell 0, tanh, L = 1, its own layout; offsets
    None). Raises FloatingPointError where the logits hold a NaN."""
    cdef StackModel m
    cdef int K = _stack_int(beam, "beam")
    cdef Py_ssize_t steps = _stack_int(n, "n")
    if legacy:
        if _stack_int(cell, "cell") != CELL_RNN or _stack_int(relu, "relu") != 0 or \
                _stack_int(L, "L") != 1:
            raise ValueError("legacy is min-char-rnn's model: cell 0, relu 0, L = 1")
        if offsets is not None:
            raise ValueError("legacy models have a fixed layout: pass offsets=None")
        if _stack_int(H, "H") < 1 or _stack_int(V, "V") < 1:
            raise ValueError(f"H and V must be positive, got {H} and {V}")
        got = _legacy_spec(_stack_int(H, "H"), _stack_int(V, "V"))
    else:
        got = _stack_spec(cell, relu, H, V, L)
        _check_offsets(offsets, got)
    _stack_model(&m, got, cell, relu, H, V, L)
    if params.shape[0] != m.n:
        raise ValueError(f"params has {params.shape[0]} elements; this model needs {m.n}")
    if K < 1:
        raise ValueError(f"beam must be a positive integer, got {K}")
    if <Py_ssize_t>K * m.V >= 2**31:  # candidate indices are C ints
        raise ValueError(f"beam={K} holds {<Py_ssize_t>K * m.V} candidates per step; the "
                         f"kernel takes fewer than 2**31")
    if steps < 0:
        raise ValueError(f"n must be >= 0, got {steps}")
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
    out = np.empty(steps, dtype=np.intc)
    if steps == 0:
        return out, 0.0
    cdef Py_ssize_t LH = <Py_ssize_t>m.L * m.H, per = LH * (2 if m.cell == CELL_LSTM else 1)
    dtype = np.float32 if floating is float else np.float64
    # copies of their own: the kernel reads no caller's buffer but params (read-only here)
    state_buf = np.zeros(2 * K * per + 16, dtype=dtype)
    state_buf[:LH] = np.asarray(h).ravel()
    if m.cell == CELL_LSTM:
        state_buf[LH:2 * LH] = np.asarray(c).ravel()
    cdef floating[::1] st = state_buf
    cdef floating[::1] wk = np.zeros(_beam_work(m.G * m.H, m.H, m.V), dtype=dtype)
    cdef double[::1] cand = np.empty(<Py_ssize_t>K * m.V, dtype=np.float64)
    cdef double[::1] scores = np.empty(2 * K, dtype=np.float64)
    cdef int[::1] heap = np.empty(K, dtype=np.intc)
    cdef int[::1] ids = np.empty(steps * K, dtype=np.intc)
    cdef int[::1] parents = np.empty(steps * K, dtype=np.intc)
    cdef int[::1] ov = out
    cdef double score = 0.0
    cdef Py_ssize_t stopped
    with nogil:
        stopped = k_beam_search(&m, &params[0], steps, K, &st[0], &wk[0], &cand[0], &scores[0],
                                &heap[0], &ids[0], &parents[0], &ov[0], &score)
    if stopped >= 0:
        raise _nan_logits_error(stopped, "float32" if floating is float else "float64")
    return out.astype(np.int32, copy=False), score / steps
