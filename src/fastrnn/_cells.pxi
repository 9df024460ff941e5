# The cells of the stacked models (included by _kernels.pyx): each one's pointwise forward and
# backward over a block of B rows, nothing else. The products that feed them (the input and
# recurrent projections) and the ones their gradients feed are the driver's (_stack.pxi).
#
# Gate order and equations are PyTorch's (nn.RNN, nn.LSTM, nn.GRU); a row of pre-activations
# holds G blocks of H values:
#   rnn  a = gx + gh                  h = act(a)                    (act: tanh or relu)
#   lstm i, f, g, o = gx + gh         c = f c' + i g,  h = o tanh(c) (i, f, o sigmoid, g tanh)
#   gru  r = sig(gx_r + gh_r), z = sig(gx_z + gh_z), n = tanh(gx_n + r gh_n),
#        h = (1 - z) n + z h'
# where ' marks the previous step. The forward functions overwrite the pre-activations with the
# gate activations, which is what the backward functions read (with the states around them).

cdef enum:
    CELL_RNN = 0
    CELL_LSTM = 1
    CELL_GRU = 2


cdef inline floating _sigmoid(floating x) noexcept nogil:
    # 1 / (1 + e^-x): e^-x may round to inf (float64) or to 2^128-ish (float32's clamped
    # approximation); either way the result is 0 or a denormal-free tiny value, never NaN
    return 1 / (1 + _exp(-x))


cdef inline int _cell_gates(int cell) noexcept nogil:
    return 4 if cell == CELL_LSTM else (3 if cell == CELL_GRU else 1)


# -- rnn ----------------------------------------------------------------------------------------

cdef void _rnn_forward(floating* h, Py_ssize_t n, bint relu) noexcept nogil:
    # h[:n] = act(h[:n]): the pre-activations become the states in place
    cdef Py_ssize_t i
    if relu:
        for i in range(n):
            h[i] = h[i] if h[i] > 0 else 0
    else:
        for i in range(n):
            h[i] = _tanh(h[i])


cdef void _rnn_backward(const floating* dh, const floating* h, floating* da, Py_ssize_t n,
                        bint relu) noexcept nogil:
    # da = dh * act'(a), from the state h = act(a): 1 - h^2 (tanh), [h > 0] (relu)
    cdef Py_ssize_t i
    if relu:
        for i in range(n):
            da[i] = dh[i] if h[i] > 0 else 0
    else:
        for i in range(n):
            da[i] = dh[i] * (1 - h[i] * h[i])


# -- lstm ---------------------------------------------------------------------------------------

cdef void _lstm_forward(floating* a, const floating* c_prev, floating* c, floating* h, int B,
                        int H) noexcept nogil:
    # a (B, 4H): pre-activations in, gate activations i, f, g, o out; c, h (B, H) the new state.
    # c may be c_prev (each value is read before it is written)
    cdef Py_ssize_t b, j, x
    cdef floating* r
    cdef floating gi, gf, gg, go, cc
    for b in range(B):
        r = a + b * 4 * <Py_ssize_t>H
        for j in range(H):
            x = b * <Py_ssize_t>H + j
            gi = _sigmoid(r[j])
            gf = _sigmoid(r[H + j])
            gg = _tanh(r[2 * H + j])
            go = _sigmoid(r[3 * H + j])
            cc = gf * c_prev[x] + gi * gg
            r[j] = gi
            r[H + j] = gf
            r[2 * H + j] = gg
            r[3 * H + j] = go
            c[x] = cc
            h[x] = go * _tanh(cc)


cdef void _lstm_backward(const floating* a, const floating* c_prev, const floating* c,
                         const floating* dh, floating* dc, floating* da, int B,
                         int H) noexcept nogil:
    # a (B, 4H) the step's gate activations, c_prev and c (B, H) the cell states around it, dh
    # (B, H) dL/dh of the step; dc (B, H) holds dL/dc from the steps after and leaves with dL/dc
    # of the step before; da (B, 4H) gets dL/d(pre-activations)
    cdef Py_ssize_t b, j, x
    cdef const floating* r
    cdef floating* d
    cdef floating gi, gf, gg, go, tc, dcc
    for b in range(B):
        r = a + b * 4 * <Py_ssize_t>H
        d = da + b * 4 * <Py_ssize_t>H
        for j in range(H):
            x = b * <Py_ssize_t>H + j
            gi = r[j]
            gf = r[H + j]
            gg = r[2 * H + j]
            go = r[3 * H + j]
            tc = _tanh(c[x])
            dcc = dc[x] + dh[x] * go * (1 - tc * tc)
            d[j] = dcc * gg * gi * (1 - gi)
            d[H + j] = dcc * c_prev[x] * gf * (1 - gf)
            d[2 * H + j] = dcc * gi * (1 - gg * gg)
            d[3 * H + j] = dh[x] * tc * go * (1 - go)
            dc[x] = dcc * gf


# -- gru ----------------------------------------------------------------------------------------

cdef void _gru_forward(floating* a, const floating* gh, const floating* h_prev, floating* ghn,
                       floating* h, int B, int H) noexcept nogil:
    # a (B, 3H): gx (input projection and b_ih) in, activations r, z, n out; gh (B, 3H): the
    # recurrent projection and b_hh; ghn (B, H) keeps its n block (BPTT needs it: r multiplies
    # it); h (B, H) the new state (may be h_prev: each value is read before it is written)
    cdef Py_ssize_t b, j, x
    cdef floating* r
    cdef const floating* q
    cdef floating gr, gz, gn, hn
    for b in range(B):
        r = a + b * 3 * <Py_ssize_t>H
        q = gh + b * 3 * <Py_ssize_t>H
        for j in range(H):
            x = b * <Py_ssize_t>H + j
            gr = _sigmoid(r[j] + q[j])
            gz = _sigmoid(r[H + j] + q[H + j])
            hn = q[2 * H + j]
            gn = _tanh(r[2 * H + j] + gr * hn)
            r[j] = gr
            r[H + j] = gz
            r[2 * H + j] = gn
            ghn[x] = hn
            h[x] = (1 - gz) * gn + gz * h_prev[x]


cdef void _gru_backward(const floating* a, const floating* ghn, const floating* h_prev,
                        const floating* dh, floating* dax, floating* dah, floating* dh_prev,
                        int B, int H) noexcept nogil:
    # dL/d(gx) into dax and dL/d(gh) into dah (both (B, 3H); they differ in the n block, where
    # r multiplies gh), and dh_prev (B, H) = the direct part of dL/dh' (z h'); the part through
    # the recurrent product is the driver's
    cdef Py_ssize_t b, j, x
    cdef const floating* r
    cdef floating* dx
    cdef floating* dg
    cdef floating gr, gz, gn, dn, dz, dr
    for b in range(B):
        r = a + b * 3 * <Py_ssize_t>H
        dx = dax + b * 3 * <Py_ssize_t>H
        dg = dah + b * 3 * <Py_ssize_t>H
        for j in range(H):
            x = b * <Py_ssize_t>H + j
            gr = r[j]
            gz = r[H + j]
            gn = r[2 * H + j]
            dn = dh[x] * (1 - gz) * (1 - gn * gn)
            dz = dh[x] * (h_prev[x] - gn) * gz * (1 - gz)
            dr = dn * ghn[x] * gr * (1 - gr)
            dx[j] = dr
            dx[H + j] = dz
            dx[2 * H + j] = dn
            dg[j] = dr
            dg[H + j] = dz
            dg[2 * H + j] = dn * gr
            dh_prev[x] = dh[x] * gz
