"""The numpy backend: the readable math of every model and the test oracle.

Per layer k (PyTorch's nn.RNN / nn.LSTM / nn.GRU, gate order i,f,g,o and r,z,n):
    gx_t = W_ih x_t + b_ih        layer 0: x_t is one-hot, so this is a column gather of W_ih
    gh_t = W_hh h_{t-1} + b_hh
    rnn   h_t = act(gx_t + gh_t)                        act = tanh or relu
    lstm  i, f, g, o = sig, sig, tanh, sig of (gx_t + gh_t) split in four
          c_t = f*c_{t-1} + i*g ;  h_t = o*tanh(c_t)
    gru   r = sig(gx_r + gh_r) ; z = sig(gx_z + gh_z) ; n = tanh(gx_n + r*gh_n)
          h_t = (1-z)*n + z*h_{t-1}
Layer k+1 reads layer k's h_t, times a dropout mask when training with dropout. The head reads the
last layer: p_t = softmax(Why h_t + by), L = sum over all B*T tokens of -ln p_t[y_t].
min-char-rnn's model (one tanh layer) is the rnn cell with Wxh, Whh, bh and no b_hh.

precision="bf16" (float32 models only): every matrix product of training and evaluation takes
bfloat16 operands (each rounded to nearest, ties to even, by bf16()) and sums in float32: the
recurrent products, the input projections of layers k > 0, the head, and in BPTT the weight
gradients and dL/dh. Layer 0's gather of W_ih columns and its scatter-add gradient stay exact,
as do the biases, the cells' pointwise math, softmax, loss and optimizer. Generation (and
priming a state for it), trace and beam search run float32 products in either precision.

Arrays are batched: inputs/targets (B,T) int32; the state is a tuple of (L,B,H) arrays, (h,) or
(h, c) for lstm (min-char-rnn's model also takes one (B,H) array). Other backends subclass this one
and override what they accelerate, so every method here is also the reference.

Calls are serialised per backend (so per model): every method that reads or writes the
parameters, the optimizer state or a scratch buffer holds the backend's `lock` for the whole
call, compiled kernels included (they release the GIL), so threads sharing a model take turns.
"""
import contextlib
import functools
import math
import threading

import numpy as np

from .._params import check_fits, check_precision, flat_anchor, pack, unflatten, \
    zeros_like_params


def _copy(buf):
    """A copy of a numpy array or a torch tensor."""
    clone = getattr(buf, "clone", None)
    return clone() if clone is not None else buf.copy()


def serialised(method):
    """The method, run holding the backend's lock (re-entrant: the generic train_step calls
    loss_and_grads and update)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)
    return locked


def nan_logits_message(k, dtype):
    """The error of every backend's sampler where the logits of the k-th id hold a NaN (also
    raised, in the same words, by the compiled kernels)."""
    return (f"the logits hold NaN at generated id {k}: the parameters overflow "
            f"{np.dtype(dtype).name} in this state, so there is no distribution to sample from")


def _all_finite(buf):
    """Whether a numpy array or torch tensor holds no NaN or infinity (min and max propagate
    NaN)."""
    n = buf.numel() if hasattr(buf, "numel") else buf.size
    return n == 0 or (math.isfinite(float(buf.min())) and math.isfinite(float(buf.max())))


def bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32: bfloat16 is
    float32's top 16 bits (sign, 8-bit exponent, 7 stored significand bits). Adding 0x7FFF plus
    the lowest kept bit to the bit pattern carries into the kept bits exactly when the dropped
    16 bits exceed half their range, or equal it with the kept part odd; a carry out of the
    significand steps the exponent (the next binade, or infinity past bfloat16's largest). NaN
    stays NaN (quietened: its kept significand bits could all be 0)."""
    a = np.asarray(a, dtype=np.float32)
    u = a.reshape(-1).view(np.uint32)  # 1-D: array arithmetic wraps silently, as meant here
    rounded = (u + np.uint32(0x7FFF) + ((u >> 16) & 1)) & np.uint32(0xFFFF0000)
    quiet_nan = (u | np.uint32(0x00400000)) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(a.reshape(-1)), quiet_nan, rounded).view(np.float32).reshape(a.shape)


def _sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the right 0
        return 1.0 / (1.0 + np.exp(-x))


# -- cells: forward(gx, gh, c) -> (h, c, cache) and backward(dh, dc, cache) -> (dgx, dgh, dc_prev,
# dh_prev_direct); gx, gh (B, G*H) hold the input and recurrent products with their biases ------

def rnn_forward(gx, gh, c, h_prev, relu=False):
    pre = gx + gh
    h = np.maximum(pre, 0) if relu else np.tanh(pre)
    return h, None, (h,)


def rnn_backward(dh, dc, cache, relu=False):
    (h,) = cache
    dpre = dh * (h > 0) if relu else dh * (1 - h * h)
    return dpre, dpre, None, 0.0


def lstm_forward(gx, gh, c, h_prev, relu=False):
    a = gx + gh
    i, f, g, o = np.split(a, 4, axis=1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c_new = f * c + i * g
    tc = np.tanh(c_new)
    return o * tc, c_new, (i, f, g, o, c, tc)


def lstm_backward(dh, dc, cache, relu=False):
    i, f, g, o, c_prev, tc = cache
    dtc = dh * o * (1 - tc * tc) + dc
    da = np.concatenate([dtc * g * i * (1 - i), dtc * c_prev * f * (1 - f), dtc * i * (1 - g * g),
                         dh * tc * o * (1 - o)], axis=1)
    return da, da, dtc * f, 0.0


def gru_forward(gx, gh, c, h_prev, relu=False):
    H = h_prev.shape[1]
    r = _sigmoid(gx[:, :H] + gh[:, :H])
    z = _sigmoid(gx[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gx[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h_prev, None, (r, z, n, gh[:, 2 * H:], h_prev)


def gru_backward(dh, dc, cache, relu=False):
    r, z, n, ghn, h_prev = cache
    dn = dh * (1 - z) * (1 - n * n)                 # through tanh
    dr = dn * ghn * r * (1 - r)
    dz = dh * (h_prev - n) * z * (1 - z)
    dgx = np.concatenate([dr, dz, dn], axis=1)
    dgh = np.concatenate([dr, dz, dn * r], axis=1)
    return dgx, dgh, None, dh * z


CELLS = {"rnn": (rnn_forward, rnn_backward), "lstm": (lstm_forward, lstm_backward),
         "gru": (gru_forward, gru_backward)}


class NumpyBackend:
    name = "numpy"

    @classmethod
    def check_available(cls):
        """Raises ImportError with an actionable message if this backend cannot run here."""

    def __init__(self, spec, dtype, device="cpu", precision="fp32"):
        if device not in (None, "cpu"):
            raise ValueError(f"backend {self.name!r} runs on the CPU only; got device={device!r} "
                             f"(use backend='torch' for CUDA)")
        self.spec = spec
        self.V, self.H, self.L = spec.vocab_size, spec.hidden_size, spec.num_layers
        self.dtype = np.dtype(dtype)
        self.precision = check_precision(precision, self.dtype)
        self._bf16 = precision == "bf16"  # read at each call: see _float32_products
        self.device = "cpu"
        self.lock = threading.RLock()
        self.flat = self.zeros()
        self.params = unflatten(self.flat, spec)
        for name, value in self._new_scratch().items():  # (setattr: see __setstate__)
            setattr(self, name, value)

    def _new_scratch(self):
        """The buffers this backend reuses from call to call, as a new backend has them."""
        return {}

    # -- copies (copy.deepcopy, pickle) ------------------------------------------------------
    def __getstate__(self):
        """The parameters (copied under the lock: no half-updated copy), without the lock
        (which cannot be copied) or the scratch buffers (made afresh)."""
        with self.lock:
            state = dict(self.__dict__, flat=_copy(self.flat), **self._new_scratch())
        del state["lock"], state["params"]
        return state

    def __setstate__(self, state):
        # setattr, not __dict__.update: an object whose __dict__ was asked for loses CPython's
        # compact attribute storage, and the training steps read a dozen attributes per call
        for name, value in state.items():
            setattr(self, name, value)
        self.lock = threading.RLock()
        self.flat = self._placed(self.flat)
        self.params = unflatten(self.flat, self.spec)  # views of the new flat buffer

    def _placed(self, flat):
        """A copied flat parameter buffer as this backend keeps it (here: aligned, see zeros)."""
        placed = self.zeros()
        placed[...] = flat
        return placed

    # -- storage -------------------------------------------------------------------------------
    def zeros(self):
        """A zeroed flat buffer shaped like the parameters (gradients, optimizer state), placed
        as _params.flat_anchor says."""
        return zeros_like_params(self.spec, self.dtype)

    @serialised
    def get_params(self):
        return {k: v.copy() for k, v in self.params.items()}

    @serialised
    def set_params(self, tensors):
        for k, v in tensors.items():
            self.params[k][...] = v

    def to_flat(self, tensors):
        """A new flat buffer holding a dict of the named tensors (already shape-checked)."""
        return pack(tensors, self.spec, self.dtype)

    def to_dict(self, flat):
        """Copies of the named tensors of a flat buffer, as numpy arrays."""
        return {k: np.array(v) for k, v in unflatten(flat, self.spec).items()}

    def to_numpy(self, buf):
        """A buffer of this backend (parameters, optimizer state) as a numpy array."""
        return np.asarray(buf)

    @serialised
    def copy_into(self, buf, a):
        """Overwrites a buffer of this backend with the values of numpy array `a`."""
        buf[...] = a

    @property
    def anchor(self):
        return flat_anchor(self.spec)

    # -- state ---------------------------------------------------------------------------------
    def _stack(self, state):
        """The state as a tuple of (L,B,H) views: a lone (B,H) or (H,) array (min-char-rnn's
        model) is viewed as (1,B,H)."""
        if isinstance(state, np.ndarray):
            return (state.reshape(1, -1, self.H),)
        return tuple(s.reshape(self.L, -1, self.H) for s in state)

    def _layer(self, k):
        """(W_ih, W_hh, b_ih, b_hh or None) of layer k."""
        return tuple(None if n is None else self.params[n] for n in self.spec.layer_names(k))

    # -- precision ---------------------------------------------------------------------------
    def _operand(self, a):
        """An operand of a matrix product as the precision takes it: rounded to bfloat16 in
        bf16 mode (the product of two bfloat16 values is exact in float32, so numpy's float32
        product then sums exactly the terms the compiled kernels sum)."""
        return bf16(a) if self._bf16 else a

    @contextlib.contextmanager
    def _float32_products(self):
        """Runs the calls inside with float32 products whatever the precision (the caller holds
        the lock, so no other call sees the switch)."""
        with self.lock:
            saved, self._bf16 = self._bf16, False
            try:
                yield
            finally:
                self._bf16 = saved

    @serialised
    def prime(self, inputs, h):
        """Runs the state h over ids (B,T) before generation, in generation's float32 products
        whatever the precision."""
        with self._float32_products():
            self.forward_loss(inputs, None, h)

    # -- math ----------------------------------------------------------------------------------
    def _forward(self, inputs, state, masks=None, keep=False):
        """Runs the stack over a chunk; the state (tuple of (L,B,H)) becomes the last one.
        Returns the last layer's outputs (B,T,H) and, with keep, per layer what BPTT needs:
        (layer input, h before each step, caches)."""
        forward, _ = CELLS[self.spec.cell]
        relu = self.spec.nonlinearity == "relu"
        B, T = inputs.shape
        lstm = self.spec.cell == "lstm"
        kept, x = [], None
        q = self._operand
        for k in range(self.L):
            w_ih, w_hh, b_ih, b_hh = self._layer(k)
            if k == 0:
                gx_all = w_ih[:, inputs].transpose(1, 2, 0) + b_ih   # column gather: (B,T,GH)
            else:
                gx_all = q(x) @ q(w_ih).T + b_ih
            h, c = state[0][k].copy(), (state[1][k].copy() if lstm else None)
            out = np.empty((B, T, self.H), dtype=self.dtype)
            h_prev, caches = [], []
            w_hh_t = q(w_hh).T
            for t in range(T):
                gh = q(h) @ w_hh_t
                if b_hh is not None:
                    gh = gh + b_hh
                h_prev.append(h)
                h, c, cache = forward(gx_all[:, t], gh, c, h, relu)
                out[:, t] = h
                caches.append(cache)
            state[0][k] = h
            if lstm:
                state[1][k] = c
            if keep:
                kept.append((x, h_prev, caches))
            x = out if masks is None or k == self.L - 1 else out * masks[k]
        return out, kept

    def _logits(self, out):
        return self._operand(out) @ self._operand(self.params["Why"]).T + self.params["by"]

    @serialised
    def forward_loss(self, inputs, targets, h):
        """Summed cross-entropy of a chunk (0.0 without targets); the state h becomes the last
        one."""
        out, _ = self._forward(inputs, self._stack(h))
        if targets is None:
            return 0.0
        z = self._logits(out)
        z = z - z.max(axis=2, keepdims=True)
        picked = np.take_along_axis(z, targets[..., None].astype(np.intp), axis=2)[..., 0]
        return float(np.sum(np.log(np.exp(z).sum(axis=2)) - picked))

    @serialised
    def loss_and_grads(self, inputs, targets, h, want_dh0=False, masks=None):
        """Forward and BPTT over one chunk; masks (L-1,B,T,H) multiply each layer's output into
        the next (dropout; None: off).

        Returns (loss, flat unclipped gradients, dL/d(initial state) or None): the last is shaped
        like the state (a tuple for a stacked model). The state h becomes the last one."""
        backward = CELLS[self.spec.cell][1]
        relu = self.spec.nonlinearity == "relu"
        state = self._stack(h)
        B, T = inputs.shape
        out, kept = self._forward(inputs, state, masks, keep=True)
        z = self._logits(out)
        z = z - z.max(axis=2, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=2, keepdims=True)
        tgt = targets[..., None].astype(np.intp)
        loss = float(np.sum(np.log(s[..., 0]) - np.take_along_axis(z, tgt, axis=2)[..., 0]))

        flat = self.zeros()
        g = unflatten(flat, self.spec)
        dz = e / s
        np.put_along_axis(dz, tgt, np.take_along_axis(dz, tgt, axis=2) - 1, axis=2)  # p - onehot
        q = self._operand
        g["Why"][...] = np.einsum("btv,bth->vh", q(dz), q(out))
        g["by"][...] = dz.sum(axis=(0, 1))
        d_out = q(dz) @ q(self.params["Why"])                            # dL/d(top outputs)
        dstate = [np.zeros_like(a) for a in state]
        for k in reversed(range(self.L)):
            names = self.spec.layer_names(k)
            w_ih, w_hh = self.params[names[0]], self.params[names[1]]
            w_hh_q = q(w_hh)
            x, h_prev, caches = kept[k]
            dgx = np.empty((B, T, w_hh.shape[0]), dtype=self.dtype)
            dgh = np.empty_like(dgx)
            dh_next = np.zeros((B, self.H), dtype=self.dtype)
            dc_next = np.zeros((B, self.H), dtype=self.dtype) if len(state) == 2 else None
            for t in reversed(range(T)):
                dgx[:, t], dgh[:, t], dc_next, direct = backward(d_out[:, t] + dh_next, dc_next,
                                                                 caches[t], relu)
                dh_next = q(dgh[:, t]) @ w_hh_q + direct
            dstate[0][k] = dh_next
            if dc_next is not None:
                dstate[1][k] = dc_next
            g[names[1]][...] = np.einsum("btg,bth->gh", q(dgh), q(np.stack(h_prev, axis=1)))
            if names[3] is not None:
                g[names[3]][...] = dgh.sum(axis=(0, 1))
            g[names[2]][...] = dgx.sum(axis=(0, 1))
            if k == 0:
                np.add.at(g[names[0]].T, inputs, dgx)                   # scatter into columns
            else:
                g[names[0]][...] = np.einsum("btg,bti->gi", q(dgx), q(x))
                d_out = q(dgx) @ q(w_ih)
                if masks is not None:
                    d_out = d_out * masks[k - 1]
        if not want_dh0:
            return loss, flat, None
        if isinstance(h, np.ndarray):
            return loss, flat, dstate[0].reshape(h.shape)
        return loss, flat, tuple(dstate)

    def _check_optimizer(self, opt):
        """Refuses an unknown optimizer, or hyperparameters the model's dtype cannot hold."""
        if opt.name not in ("adagrad", "sgd", "rmsprop", "adam"):
            raise ValueError(f"unknown optimizer {opt.name!r}")
        check_fits(self.dtype, allow_inf=("clip", "clip_norm"), lr=opt.lr, eps=opt.eps,
                   clip=opt.clip, clip_norm=opt.clip_norm)

    @serialised
    def update(self, opt, grads, grad_scale=1.0):
        """Applies optimizer `opt` (hyperparameters, flat state, step count) to the parameters,
        with the gradient first multiplied by grad_scale; see fastrnn.optim for the math, which
        is written here in the same order of operations as the compiled kernel."""
        self._check_optimizer(opt)
        dt = self.dtype.type
        scale = grad_scale
        if opt.clip_norm is not None and opt.clip_norm < math.inf:
            gd = grads.astype(np.float64) * grad_scale
            norm = math.sqrt(float(gd @ gd))
            if opt.clip_norm / (norm + 1e-6) < 1:
                scale = grad_scale * (opt.clip_norm / (norm + 1e-6))
        g = grads * dt(scale)
        if opt.clip is not None and opt.clip < math.inf:
            with np.errstate(over="ignore"):  # a clip beyond the dtype's range is no clipping
                g = np.clip(g, dt(-opt.clip), dt(opt.clip))
        lr, eps, t = dt(opt.lr), dt(opt.eps), opt.steps + 1
        b1, b2 = dt(opt.beta1), dt(opt.beta2)
        c1, c2 = dt(1.0 - opt.beta1), dt(1.0 - opt.beta2)
        if opt.name == "adagrad":
            mem = opt.state["mem"]
            mem += g * g
            self.flat -= lr * g / np.sqrt(mem + eps)
        elif opt.name == "sgd":
            self.flat -= lr * g
        elif opt.name == "rmsprop":
            ms = opt.state["mean_square"]
            ms[...] = b2 * ms + c2 * (g * g)
            self.flat -= lr * g / (np.sqrt(ms) + eps)
        elif opt.name == "adam":
            m, v = opt.state["m"], opt.state["v"]
            bc1, bc2 = dt(1.0 - opt.beta1 ** t), dt(1.0 - opt.beta2 ** t)
            m[...] = b1 * m + c1 * g
            v[...] = b2 * v + c2 * (g * g)
            self.flat -= lr * (m / bc1) / (np.sqrt(v / bc2) + eps)
        else:
            raise ValueError(f"unknown optimizer {opt.name!r}")
        opt.steps = t

    @serialised
    def train_step(self, inputs, targets, h, opt, grad_scale=1.0, masks=None):
        """One training iteration; the state h becomes the last one. Returns the summed loss."""
        self._check_optimizer(opt)  # before h changes, as the fused compiled step does
        loss, grads, _ = self.loss_and_grads(inputs, targets, h, masks=masks)
        self.update(opt, grads, grad_scale)
        return loss

    @serialised
    def train_step_guarded(self, inputs, targets, h, opt, grad_scale=1.0, masks=None):
        """train_step that is only taken when its loss is finite and it leaves the parameters
        and the optimizer state finite; otherwise parameters, optimizer state (step count
        included) and h are left exactly as they were. Returns (loss, taken).

        This generic version (any backend whose buffers are numpy arrays or torch tensors) saves
        copies first and puts them back; the cython backend does it inside its fused step."""
        bufs = [self.flat] + [opt.state[name] for name in opt.state_names]
        saved = [_copy(b) for b in bufs]
        steps = opt.steps
        h_new = h.copy() if isinstance(h, np.ndarray) else tuple(a.copy() for a in h)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked below
            loss = self.train_step(inputs, targets, h_new, opt, grad_scale, masks=masks)
        if math.isfinite(loss) and all(_all_finite(b) for b in bufs):
            for a, b in zip(self._stack(h), self._stack(h_new)):
                a[...] = b
            return loss, True
        for b, s in zip(bufs, saved):
            b[...] = s
        opt.steps = steps
        return loss, False

    @serialised
    def trace(self, ids):
        """Everything one sequence of ids (T,) does inside the model, from the zero state, for
        fastrnn.inspect: (layers, logits). logits (T,V) are the head's after each id; layers
        holds per layer a dict of (T,H) arrays, each row the value after reading that id: "h";
        for lstm also "c" and the gates "i", "f", "g", "o"; for gru the gates "r", "z", "n"."""
        forward = CELLS[self.spec.cell][0]
        relu = self.spec.nonlinearity == "relu"
        lstm = self.spec.cell == "lstm"
        gate_names = {"lstm": "ifgo", "gru": "rzn"}.get(self.spec.cell, "")
        layers, x = [], None
        for k in range(self.L):
            w_ih, w_hh, b_ih, b_hh = self._layer(k)
            gx_all = (w_ih[:, ids].T if k == 0 else x @ w_ih.T) + b_ih   # (T, G*H)
            h = np.zeros((1, self.H), dtype=self.dtype)
            c = np.zeros((1, self.H), dtype=self.dtype) if lstm else None
            seen = {name: [] for name in ("h", "c")[:self.spec.state_count] + tuple(gate_names)}
            for t in range(len(ids)):
                gh = h @ w_hh.T
                if b_hh is not None:
                    gh = gh + b_hh
                h, c, cache = forward(gx_all[t:t + 1], gh, c, h, relu)
                seen["h"].append(h[0])
                if lstm:
                    seen["c"].append(c[0])
                for name, gate in zip(gate_names, cache):  # the caches start with the gates
                    seen[name].append(gate[0])
            layers.append({name: np.array(rows) for name, rows in seen.items()})
            x = layers[-1]["h"]
        return layers, x @ self.params["Why"].T + self.params["by"]  # float32 in any precision

    # -- generation ----------------------------------------------------------------------------
    def step_one(self, idx, state):
        """Advances the state (tuple of (L,1,H)) by one input id; returns the top layer's h."""
        forward = CELLS[self.spec.cell][0]
        relu = self.spec.nonlinearity == "relu"
        lstm = self.spec.cell == "lstm"
        x = None
        for k in range(self.L):
            w_ih, w_hh, b_ih, b_hh = self._layer(k)
            gx = (w_ih[:, idx] if k == 0 else w_ih @ x) + b_ih
            gh = w_hh @ state[0][k, 0]
            if b_hh is not None:
                gh = gh + b_hh
            h, c, _ = forward(gx[None], gh[None], state[1][k] if lstm else None, state[0][k],
                              relu)
            state[0][k] = h
            if lstm:
                state[1][k] = c
            x = h[0]
        return x

    @serialised
    def generate(self, n, h, uniforms, temperature, greedy, top_k=0, top_p=1.0):
        """n ids from the state h ((H,) for min-char-rnn's model, else a tuple of (L,H)),
        updated in place. Each id: logits z = Why h + by of the top layer, then the argmax
        (greedy), or a draw: masses e = exp((z - max z) / temperature) (when max z is infinite,
        its limit: 1 for each logit equal to max z, 0 for the others); all but the top_k highest
        logits zeroed (0: none; ties rank the lower id first), then all but the smallest run of
        the rest, in rank order, whose mass reaches top_p of theirs; the id is the first whose
        cumulative mass, in id order, exceeds uniforms[k] times the kept total. Then the state
        steps on that id. Logits holding a NaN (weights that overflow) raise
        FloatingPointError."""
        p = self.params
        V = self.V
        state = self._stack(h)
        out = np.empty(n, dtype=np.int32)
        n_rank = top_k if 0 < top_k < V else V
        filtered = n_rank < V or top_p < 1
        top = state[0][-1, 0]
        with np.errstate(over="ignore", invalid="ignore"):  # overflows: see the NaN check
            for k in range(n):
                z = p["Why"] @ top + p["by"]
                m = z.max()  # NaN if any logit is
                if np.isnan(m):
                    raise FloatingPointError(nan_logits_message(k, self.dtype))
                if greedy:
                    idx = int(np.argmax(z))
                else:  # (at an infinite m, z - m is NaN where z equals m)
                    e = (z == m).astype(z.dtype) if np.isinf(m) else np.exp((z - m) / temperature)
                    if filtered:
                        ranked = np.lexsort((np.arange(V), -z))[:n_rank]
                        n_keep = n_rank
                        if top_p < 1:
                            cum = np.cumsum(e[ranked], dtype=np.float64)
                            n_keep = int(np.argmax(cum >= top_p * cum[-1])) + 1
                        kept = np.zeros_like(e)
                        kept[ranked[:n_keep]] = e[ranked[:n_keep]]
                        e = kept
                    c = np.cumsum(e, dtype=np.float64)
                    idx = int(np.searchsorted(c, uniforms[k] * c[-1], side="right"))
                    if idx >= V:  # rounding left no id above the target: the last one with mass
                        idx = int(np.flatnonzero(e)[-1])
                out[k] = idx
                top = self.step_one(idx, state)
        return out

    # -- beam search -----------------------------------------------------------------------------
    @serialised
    def beam_search(self, n, h, beam):
        """The n ids of the best of `beam` hypotheses grown from the state h (as generate takes
        it; left unchanged), and their mean log-probability per id (nats).

        The K = `beam` hypotheses are the rows of a batch of states (L,K,H). Each step scores
        every (hypothesis, next id) pair as the hypothesis's summed log-probability plus
        log softmax(logits)[id], in float64, and keeps the K best (see beam_select); the rows of
        the state are gathered to follow them, and each steps on its new id with step_one (the
        very arithmetic of generate, so that a beam of 1 is the greedy path)."""
        state = tuple(a.copy() for a in _as_rows(h, self.L, self.H))
        scores = np.zeros(1)
        ids, parents = [], []  # per step: the kept hypotheses' last ids, and their rows before
        p = self.params
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(n):
                z = np.stack([p["Why"] @ state[0][-1, b] + p["by"]
                              for b in range(len(scores))])
                rows, last, scores = beam_select(z, scores, beam, t, self.dtype)
                ids.append(last)
                parents.append(rows)
                state = tuple(a[:, rows] for a in state)  # copies: rows may repeat
                if t + 1 < n:
                    for b in range(len(rows)):
                        self.step_one(int(last[b]), tuple(a[:, b:b + 1] for a in state))
        return beam_backtrack(ids, parents), (float(scores[0]) / n if n else 0.0)


def _as_rows(h, L, H):
    """A state of one sequence as generate takes it ((H,) or a tuple of (L,H)) as a tuple of
    (L,1,H) views."""
    return (h.reshape(1, 1, H),) if isinstance(h, np.ndarray) else \
        tuple(a.reshape(L, 1, H) for a in h)


def beam_select(z, scores, K, t, dtype):
    """One beam step: (parents, ids, scores) of the K best of the candidates (b, v), hypothesis
    b of `scores` (float64, best first) extended by id v, scored scores[b] + log softmax(z[b])[v]
    in float64 (z: (len(scores), V) logits). Best first; equal scores rank by b, then by v (the
    lower id first), so every backend keeps the same candidates. A NaN logit raises as
    generate does (t: the position, for the message)."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    if np.isnan(m).any():
        raise FloatingPointError(nan_logits_message(t, dtype))
    inf = np.isinf(m[:, 0])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        shifted = z - m
        # an infinite highest logit: softmax's limit, all the mass on the logits equal to it
        shifted[inf] = np.where(z[inf] == m[inf], 0.0, -np.inf)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cand = (scores[:, None] + logp).ravel()
    order = np.lexsort((np.arange(cand.size), -cand))[:K]  # stable: ties by b, then by v
    V = z.shape[1]
    return order // V, (order % V).astype(np.int32), cand[order]


def beam_backtrack(ids, parents):
    """The ids (n,) of hypothesis 0 (the best) after the last step, followed back through the
    rows each step recorded (ids[t], parents[t]: per hypothesis kept at step t)."""
    n = len(ids)
    out = np.empty(n, dtype=np.int32)
    b = 0
    for t in range(n - 1, -1, -1):
        out[t] = ids[t][b]
        b = parents[t][b]
    return out
