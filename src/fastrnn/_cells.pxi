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
#
# Constants are written <floating>1: Cython writes a bare 1 in `1 - x` as the C double 1.0, so
# each float32 expression around one was computed in double (conversions both ways and
# double-width divisions in the sigmoid): a GRU cell took 1.2 to 1.4 times as long.

cdef enum:
    CELL_RNN = 0
    CELL_LSTM = 1
    CELL_GRU = 2


cdef inline floating _sigmoid(floating x) noexcept nogil:
    # 1 / (1 + e^-x): e^-x may round to inf (float64) or to 2^128-ish (float32's clamped
    # approximation); either way the result is 0 or a denormal-free tiny value, never NaN
    return <floating>1 / (<floating>1 + _exp(-x))


cdef inline int _cell_gates(int cell) noexcept nogil:
    return 4 if cell == CELL_LSTM else (3 if cell == CELL_GRU else 1)


# -- rnn ----------------------------------------------------------------------------------------

cdef void _rnn_forward(floating* h, int B, int H, const floating* bias, bint relu) noexcept nogil:
    # h (B, H) = act(h + bias): the pre-activations become the states in place; bias (H) may be
    # NULL (h has it then)
    cdef Py_ssize_t b, j
    cdef floating x
    cdef floating* row
    for b in range(B):
        row = h + b * <Py_ssize_t>H
        if bias != NULL:
            for j in range(H):
                row[j] += bias[j]
        if relu:
            for j in range(H):
                x = row[j]
                row[j] = x if x > 0 else 0
        else:
            for j in range(H):
                row[j] = _tanh(row[j])


cdef void _rnn_backward(const floating* dh, const floating* carry, const floating* h,
                        floating* da, Py_ssize_t n, bint relu) noexcept nogil:
    # da = (dh + carry) * act'(a), from the state h = act(a): 1 - h^2 (tanh), [h > 0] (relu);
    # carry is the part of dL/dh that came back through the recurrence (added here, not in a
    # pass of its own over dh)
    cdef Py_ssize_t i
    if relu:
        for i in range(n):
            da[i] = dh[i] + carry[i] if h[i] > 0 else 0
    else:
        for i in range(n):
            da[i] = (dh[i] + carry[i]) * (<floating>1 - h[i] * h[i])


# The gated cells work on blocks of CELL_BLOCK units of a row at a time: each gate's values are
# read through their own pointer and the results written into local arrays, then copied out.
# Written straight to the gates' rows (which may alias one another as far as the compiler
# knows), the loops were not vectorised, and the cell took more time than the products.

cdef enum:
    CELL_BLOCK = 64


cdef inline const floating* _gate_bias(const floating* bias, int g, int H, Py_ssize_t j0,
                                       const floating* zero) noexcept nogil:
    # gate g's values of a bias row from unit j0 on, or a block of zeros when there is no bias
    # (the caller's rows have it already)
    return bias + g * <Py_ssize_t>H + j0 if bias != NULL else zero


# -- lstm ---------------------------------------------------------------------------------------

cdef void _lstm_forward(floating* a, const floating* bias, const floating* c_prev, floating* c,
                        floating* h, int B, int H) noexcept nogil:
    # a (B, 4H): pre-activations in (bias (4H) added here unless it is NULL), gate activations
    # i, f, g, o out; c, h (B, H) the new state. c may be c_prev (each block is read before it
    # is written)
    cdef Py_ssize_t b, jb, j0, q, n
    cdef floating* ri
    cdef floating* rf
    cdef floating* rg
    cdef floating* ro
    cdef const floating* cp
    cdef floating ti[CELL_BLOCK]
    cdef floating tf[CELL_BLOCK]
    cdef floating tg[CELL_BLOCK]
    cdef floating to[CELL_BLOCK]
    cdef floating tc[CELL_BLOCK]
    cdef floating th[CELL_BLOCK]
    cdef floating zero[CELL_BLOCK]
    cdef const floating* bi
    cdef const floating* bf
    cdef const floating* bg
    cdef const floating* bo
    memset(zero, 0, CELL_BLOCK * sizeof(floating))
    for b in range(B):
        ri = a + b * 4 * <Py_ssize_t>H
        rf = ri + H
        rg = rf + H
        ro = rg + H
        for jb in range((H + CELL_BLOCK - 1) // CELL_BLOCK):
            j0 = jb * <Py_ssize_t>CELL_BLOCK
            n = min(<Py_ssize_t>CELL_BLOCK, H - j0)
            cp = c_prev + b * <Py_ssize_t>H + j0
            bi = _gate_bias(bias, 0, H, j0, zero)
            bf = _gate_bias(bias, 1, H, j0, zero)
            bg = _gate_bias(bias, 2, H, j0, zero)
            bo = _gate_bias(bias, 3, H, j0, zero)
            for q in range(n):
                ti[q] = _sigmoid(ri[j0 + q] + bi[q])
                tf[q] = _sigmoid(rf[j0 + q] + bf[q])
                tg[q] = _tanh(rg[j0 + q] + bg[q])
                to[q] = _sigmoid(ro[j0 + q] + bo[q])
                tc[q] = tf[q] * cp[q] + ti[q] * tg[q]
                th[q] = to[q] * _tanh(tc[q])
            memcpy(ri + j0, ti, n * sizeof(floating))
            memcpy(rf + j0, tf, n * sizeof(floating))
            memcpy(rg + j0, tg, n * sizeof(floating))
            memcpy(ro + j0, to, n * sizeof(floating))
            memcpy(c + b * <Py_ssize_t>H + j0, tc, n * sizeof(floating))
            memcpy(h + b * <Py_ssize_t>H + j0, th, n * sizeof(floating))


cdef void _lstm_backward(const floating* a, const floating* c_prev, const floating* c,
                         const floating* dh, const floating* carry, floating* dc, floating* da,
                         int B, int H) noexcept nogil:
    # a (B, 4H) the step's gate activations, c_prev and c (B, H) the cell states around it;
    # dL/dh of the step is dh (B, H) + carry (B, H), the part that came back through the
    # recurrence (as in _rnn_backward); dc (B, H) holds dL/dc from the steps after and leaves
    # with dL/dc of the step before; da (B, 4H) gets dL/d(pre-activations)
    cdef Py_ssize_t b, jb, j0, q, n, x
    cdef const floating* ri
    cdef const floating* rf
    cdef const floating* rg
    cdef const floating* ro
    cdef floating* d
    cdef floating di[CELL_BLOCK]
    cdef floating df[CELL_BLOCK]
    cdef floating dg[CELL_BLOCK]
    cdef floating do[CELL_BLOCK]
    cdef floating dn[CELL_BLOCK]
    cdef floating tc, dcc, g
    for b in range(B):
        ri = a + b * 4 * <Py_ssize_t>H
        rf = ri + H
        rg = rf + H
        ro = rg + H
        d = da + b * 4 * <Py_ssize_t>H
        for jb in range((H + CELL_BLOCK - 1) // CELL_BLOCK):
            j0 = jb * <Py_ssize_t>CELL_BLOCK
            n = min(<Py_ssize_t>CELL_BLOCK, H - j0)
            x = b * <Py_ssize_t>H + j0
            for q in range(n):
                g = dh[x + q] + carry[x + q]
                tc = _tanh(c[x + q])
                dcc = dc[x + q] + g * ro[j0 + q] * (<floating>1 - tc * tc)
                di[q] = dcc * rg[j0 + q] * ri[j0 + q] * (<floating>1 - ri[j0 + q])
                df[q] = dcc * c_prev[x + q] * rf[j0 + q] * (<floating>1 - rf[j0 + q])
                dg[q] = dcc * ri[j0 + q] * (<floating>1 - rg[j0 + q] * rg[j0 + q])
                do[q] = g * tc * ro[j0 + q] * (<floating>1 - ro[j0 + q])
                dn[q] = dcc * rf[j0 + q]
            memcpy(d + j0, di, n * sizeof(floating))
            memcpy(d + H + j0, df, n * sizeof(floating))
            memcpy(d + 2 * H + j0, dg, n * sizeof(floating))
            memcpy(d + 3 * H + j0, do, n * sizeof(floating))
            memcpy(dc + x, dn, n * sizeof(floating))


# -- gru ----------------------------------------------------------------------------------------

cdef void _gru_forward(floating* a, const floating* gh, const floating* b_ih,
                       const floating* b_hh, const floating* h_prev, floating* ghn, floating* h,
                       int B, int H) noexcept nogil:
    # a (B, 3H): gx (the input projection) in, activations r, z, n out; gh (B, 3H): the
    # recurrent projection. b_ih and b_hh (3H each) are added to gx and gh here unless NULL (gx,
    # gh have them then; adding them here spares a batch step passes that copy them into every
    # row first). ghn (B, H) keeps gh's n block with its bias (BPTT needs it: r multiplies it);
    # h (B, H) the new state (may be h_prev: each block is read before it is written)
    cdef Py_ssize_t b, jb, j0, q, n, x
    cdef floating* rr
    cdef floating* rz
    cdef floating* rn
    cdef const floating* qr
    cdef const floating* qz
    cdef const floating* qn
    cdef floating tr[CELL_BLOCK]
    cdef floating tz[CELL_BLOCK]
    cdef floating tn[CELL_BLOCK]
    cdef floating th[CELL_BLOCK]
    cdef floating tq[CELL_BLOCK]
    cdef floating zero[CELL_BLOCK]
    cdef const floating* br
    cdef const floating* bz
    cdef const floating* bn
    cdef const floating* xr
    cdef const floating* xz
    cdef const floating* xn
    memset(zero, 0, CELL_BLOCK * sizeof(floating))
    for b in range(B):
        rr = a + b * 3 * <Py_ssize_t>H
        rz = rr + H
        rn = rz + H
        qr = gh + b * 3 * <Py_ssize_t>H
        qz = qr + H
        qn = qz + H
        for jb in range((H + CELL_BLOCK - 1) // CELL_BLOCK):
            j0 = jb * <Py_ssize_t>CELL_BLOCK
            n = min(<Py_ssize_t>CELL_BLOCK, H - j0)
            x = b * <Py_ssize_t>H + j0
            br = _gate_bias(b_hh, 0, H, j0, zero)
            bz = _gate_bias(b_hh, 1, H, j0, zero)
            bn = _gate_bias(b_hh, 2, H, j0, zero)
            xr = _gate_bias(b_ih, 0, H, j0, zero)
            xz = _gate_bias(b_ih, 1, H, j0, zero)
            xn = _gate_bias(b_ih, 2, H, j0, zero)
            for q in range(n):
                tr[q] = _sigmoid((rr[j0 + q] + xr[q]) + (qr[j0 + q] + br[q]))
                tz[q] = _sigmoid((rz[j0 + q] + xz[q]) + (qz[j0 + q] + bz[q]))
                tq[q] = qn[j0 + q] + bn[q]
                tn[q] = _tanh((rn[j0 + q] + xn[q]) + tr[q] * tq[q])
                th[q] = (<floating>1 - tz[q]) * tn[q] + tz[q] * h_prev[x + q]
            memcpy(rr + j0, tr, n * sizeof(floating))
            memcpy(rz + j0, tz, n * sizeof(floating))
            memcpy(rn + j0, tn, n * sizeof(floating))
            memcpy(ghn + x, tq, n * sizeof(floating))
            memcpy(h + x, th, n * sizeof(floating))


cdef void _gru_backward(const floating* a, const floating* ghn, const floating* h_prev,
                        const floating* dh, const floating* carry, floating* dax, floating* dah,
                        floating* dh_prev, int B, int H) noexcept nogil:
    # dL/dh of the step is dh (B, H) + carry (B, H), the part that came back through the
    # recurrence (as in _rnn_backward). dL/d(gx) into dax and dL/d(gh) into dah (both (B, 3H);
    # they differ in the n block, where r multiplies gh), and dh_prev (B, H) = the direct part
    # of dL/dh' (z h'); the part through the recurrent product is the driver's. dh_prev may be
    # carry: each block is read before it is written.
    cdef Py_ssize_t b, jb, j0, q, n, x
    cdef const floating* rr
    cdef const floating* rz
    cdef const floating* rn
    cdef floating* dx
    cdef floating* dg
    cdef floating tr[CELL_BLOCK]
    cdef floating tz[CELL_BLOCK]
    cdef floating tn[CELL_BLOCK]
    cdef floating tm[CELL_BLOCK]
    cdef floating tp[CELL_BLOCK]
    cdef floating dn, g
    for b in range(B):
        rr = a + b * 3 * <Py_ssize_t>H
        rz = rr + H
        rn = rz + H
        dx = dax + b * 3 * <Py_ssize_t>H
        dg = dah + b * 3 * <Py_ssize_t>H
        for jb in range((H + CELL_BLOCK - 1) // CELL_BLOCK):
            j0 = jb * <Py_ssize_t>CELL_BLOCK
            n = min(<Py_ssize_t>CELL_BLOCK, H - j0)
            x = b * <Py_ssize_t>H + j0
            for q in range(n):
                g = dh[x + q] + carry[x + q]
                dn = g * (<floating>1 - rz[j0 + q]) * (
                    <floating>1 - rn[j0 + q] * rn[j0 + q])
                tz[q] = (g * (h_prev[x + q] - rn[j0 + q]) * rz[j0 + q] *
                         (<floating>1 - rz[j0 + q]))
                tr[q] = dn * ghn[x + q] * rr[j0 + q] * (<floating>1 - rr[j0 + q])
                tn[q] = dn
                tm[q] = dn * rr[j0 + q]
                tp[q] = g * rz[j0 + q]
            memcpy(dx + j0, tr, n * sizeof(floating))
            memcpy(dx + H + j0, tz, n * sizeof(floating))
            memcpy(dx + 2 * H + j0, tn, n * sizeof(floating))
            memcpy(dg + j0, tr, n * sizeof(floating))
            memcpy(dg + H + j0, tz, n * sizeof(floating))
            memcpy(dg + 2 * H + j0, tm, n * sizeof(floating))
            memcpy(dh_prev + x, tp, n * sizeof(floating))
