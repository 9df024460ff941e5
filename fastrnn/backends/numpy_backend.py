"""The numpy backend: the readable math of the model and the test oracle.

    h_t = tanh(Wxh[:, x_t] + Whh h_{t-1} + bh)      (the one-hot input is a column gather)
    p_t = softmax(Why h_t + by)
    L   = sum_t -ln p_t[y_t]                         (summed over all B*T tokens)

Arrays are batched: inputs/targets (B,T) int32, hidden states (B,H). Other backends subclass
this one and override what they accelerate, so every method here is also the reference.

Calls are serialised per backend (so per model): every method that reads or writes the
parameters, the optimizer state or a scratch buffer holds the backend's `lock` for the whole
call, compiled kernels included (they release the GIL), so threads sharing a model take turns.
"""
import functools
import math
import threading

import numpy as np

from .._params import aligned_zeros, check_fits, num_params, pack, unflatten


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


class NumpyBackend:
    name = "numpy"

    @classmethod
    def check_available(cls):
        """Raises ImportError with an actionable message if this backend cannot run here."""

    def __init__(self, vocab_size, hidden_size, dtype, device="cpu"):
        if device not in (None, "cpu"):
            raise ValueError(f"backend {self.name!r} runs on the CPU only; got device={device!r} "
                             f"(use backend='torch' for CUDA)")
        self.V, self.H, self.dtype = vocab_size, hidden_size, np.dtype(dtype)
        self.device = "cpu"
        self.lock = threading.RLock()
        self.flat = self.zeros()
        self.params = unflatten(self.flat, hidden_size, vocab_size)
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
        self.params = unflatten(self.flat, self.H, self.V)  # views of the new flat buffer

    def _placed(self, flat):
        """A copied flat parameter buffer as this backend keeps it (here: aligned, see zeros)."""
        placed = self.zeros()
        placed[...] = flat
        return placed

    # -- storage -------------------------------------------------------------------------------
    def zeros(self):
        """A zeroed flat buffer shaped like the parameters (gradients, optimizer state), placed
        so that its Whh starts a 64-byte line (see _params.aligned_empty)."""
        return aligned_zeros(num_params(self.H, self.V), self.dtype, at=self.H * self.V)

    @serialised
    def get_params(self):
        return {k: v.copy() for k, v in self.params.items()}

    @serialised
    def set_params(self, tensors):
        for k, v in tensors.items():
            self.params[k][...] = v

    def to_flat(self, tensors):
        """A new flat buffer holding a dict of the five tensors (already shape-checked)."""
        return pack(tensors, self.H, self.V, self.dtype)

    def to_dict(self, flat):
        """Copies of the five tensors of a flat buffer, as numpy arrays."""
        return {k: np.array(v) for k, v in unflatten(flat, self.H, self.V).items()}

    def to_numpy(self, buf):
        """A buffer of this backend (parameters, optimizer state) as a numpy array."""
        return np.asarray(buf)

    @serialised
    def copy_into(self, buf, a):
        """Overwrites a buffer of this backend with the values of numpy array `a`."""
        buf[...] = a

    # -- math ----------------------------------------------------------------------------------
    def _hidden_states(self, inputs, h0):
        """[h0, h_1, ..., h_T], each (B,H)."""
        p = self.params
        hs = [h0]
        for t in range(inputs.shape[1]):
            hs.append(np.tanh(p["Wxh"][:, inputs[:, t]].T + hs[-1] @ p["Whh"].T + p["bh"]))
        return hs

    @serialised
    def forward_loss(self, inputs, targets, h):
        """Summed cross-entropy of a chunk (0.0 without targets); h (B,H) becomes the last state."""
        p = self.params
        hs = self._hidden_states(inputs, h)
        loss = 0.0
        if targets is not None:
            rows = np.arange(inputs.shape[0])
            for t in range(inputs.shape[1]):
                z = hs[t + 1] @ p["Why"].T + p["by"]
                z = z - z.max(axis=1, keepdims=True)
                loss += float(np.sum(np.log(np.exp(z).sum(axis=1)) - z[rows, targets[:, t]]))
        h[...] = hs[-1]
        return loss

    @serialised
    def loss_and_grads(self, inputs, targets, h, want_dh0=False):
        """Forward and BPTT over one chunk.

        Returns (loss, flat unclipped gradients, dL/dh0 or None); h (B,H) becomes the last state.
        """
        p = self.params
        B, T = inputs.shape
        rows = np.arange(B)
        hs = self._hidden_states(inputs, h)
        loss, probs = 0.0, []
        for t in range(T):
            z = hs[t + 1] @ p["Why"].T + p["by"]
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            s = e.sum(axis=1, keepdims=True)
            loss += float(np.sum(np.log(s[:, 0]) - z[rows, targets[:, t]]))
            probs.append(e / s)

        flat = self.zeros()
        g = unflatten(flat, self.H, self.V)
        dh_next = np.zeros_like(h)
        for t in reversed(range(T)):
            dz = probs[t]
            dz[rows, targets[:, t]] -= 1                   # softmax - onehot
            g["Why"] += dz.T @ hs[t + 1]
            g["by"] += dz.sum(axis=0)
            dh = dz @ p["Why"] + dh_next
            dhraw = (1 - hs[t + 1] ** 2) * dh               # through tanh
            g["bh"] += dhraw.sum(axis=0)
            np.add.at(g["Wxh"].T, inputs[:, t], dhraw)      # scatter-add into input columns
            g["Whh"] += dhraw.T @ hs[t]
            dh_next = dhraw @ p["Whh"]
        h[...] = hs[-1]
        return loss, flat, (dh_next if want_dh0 else None)

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
    def train_step(self, inputs, targets, h, opt, grad_scale=1.0):
        """One training iteration; h (B,H) becomes the last state. Returns the summed loss."""
        self._check_optimizer(opt)  # before h changes, as the fused compiled step does
        loss, grads, _ = self.loss_and_grads(inputs, targets, h)
        self.update(opt, grads, grad_scale)
        return loss

    @serialised
    def train_step_guarded(self, inputs, targets, h, opt, grad_scale=1.0):
        """train_step that is only taken when its loss is finite and it leaves the parameters
        and the optimizer state finite; otherwise parameters, optimizer state (step count
        included) and h are left exactly as they were. Returns (loss, taken).

        This generic version (any backend whose buffers are numpy arrays or torch tensors) saves
        copies first and puts them back; the cython backend does it inside its fused step."""
        bufs = [self.flat] + [opt.state[name] for name in opt.state_names]
        saved = [_copy(b) for b in bufs]
        steps = opt.steps
        h_new = h.copy()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # checked below
            loss = self.train_step(inputs, targets, h_new, opt, grad_scale)
        if math.isfinite(loss) and all(_all_finite(b) for b in bufs):
            h[...] = h_new
            return loss, True
        for b, s in zip(bufs, saved):
            b[...] = s
        opt.steps = steps
        return loss, False

    @serialised
    def generate(self, n, h, uniforms, temperature, greedy, top_k=0, top_p=1.0):
        """n ids from state h (H,), updated in place. Each id: logits z = Why h + by, then the
        argmax (greedy), or a draw: masses e = exp((z - max z) / temperature) (when max z is
        infinite, its limit: 1 for each logit equal to max z, 0 for the others); all but the
        top_k highest logits zeroed (0: none; ties rank the lower id first), then all but the
        smallest run of the rest, in rank order, whose mass reaches top_p of theirs; the id is
        the first whose cumulative mass, in id order, exceeds uniforms[k] times the kept total.
        Then h steps on that id. Logits holding a NaN (weights that overflow) raise
        FloatingPointError."""
        p = self.params
        V = self.V
        out = np.empty(n, dtype=np.int32)
        n_rank = top_k if 0 < top_k < V else V
        filtered = n_rank < V or top_p < 1
        with np.errstate(over="ignore", invalid="ignore"):  # overflows: see the NaN check
            for k in range(n):
                z = p["Why"] @ h + p["by"]
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
                h[...] = np.tanh(p["Wxh"][:, idx] + p["Whh"] @ h + p["bh"])
        return out
