"""The numpy backend: the readable math of the model and the test oracle.

    h_t = tanh(Wxh[:, x_t] + Whh h_{t-1} + bh)      (the one-hot input is a column gather)
    p_t = softmax(Why h_t + by)
    L   = sum_t -ln p_t[y_t]                         (summed over all B*T tokens)

Arrays are batched: inputs/targets (B,T) int32, hidden states (B,H). Other backends subclass
this one and override what they accelerate, so every method here is also the reference.
"""
import numpy as np

from .._params import check_fits, num_params, unflatten


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
        self.flat = np.zeros(num_params(hidden_size, vocab_size), dtype=self.dtype)
        self.params = unflatten(self.flat, hidden_size, vocab_size)

    # -- storage -------------------------------------------------------------------------------
    def zeros(self):
        """A zeroed flat buffer shaped like the parameters (gradients, optimizer state)."""
        return np.zeros_like(self.flat)

    def get_params(self):
        return {k: v.copy() for k, v in self.params.items()}

    def set_params(self, tensors):
        for k, v in tensors.items():
            self.params[k][...] = v

    def to_flat(self, tensors):
        """A new flat buffer holding a dict of the five tensors (already shape-checked)."""
        flat = self.zeros()
        views = unflatten(flat, self.H, self.V)
        for k, v in tensors.items():
            views[k][...] = v
        return flat

    def to_dict(self, flat):
        """Copies of the five tensors of a flat buffer, as numpy arrays."""
        return {k: np.array(v) for k, v in unflatten(flat, self.H, self.V).items()}

    # -- math ----------------------------------------------------------------------------------
    def _hidden_states(self, inputs, h0):
        """[h0, h_1, ..., h_T], each (B,H)."""
        p = self.params
        hs = [h0]
        for t in range(inputs.shape[1]):
            hs.append(np.tanh(p["Wxh"][:, inputs[:, t]].T + hs[-1] @ p["Whh"].T + p["bh"]))
        return hs

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
        if opt.name != "adagrad":
            raise ValueError(f"unknown optimizer {opt.name!r}")
        check_fits(self.dtype, allow_inf=("clip",), lr=opt.lr, eps=opt.eps, clip=opt.clip)

    def update(self, opt, grads):
        """Applies optimizer `opt` (its hyperparameters and flat state) to the parameters."""
        self._check_optimizer(opt)
        with np.errstate(over="ignore"):  # a clip beyond the dtype's range is no clipping
            g = grads if opt.clip is None else np.clip(grads, -opt.clip, opt.clip)
        mem = opt.state["mem"]
        mem += g * g
        self.flat -= opt.lr * g / np.sqrt(mem + opt.eps)

    def train_step(self, inputs, targets, h, opt):
        """One training iteration; h (B,H) becomes the last state. Returns the summed loss."""
        self._check_optimizer(opt)  # before h changes, as the fused compiled step does
        loss, grads, _ = self.loss_and_grads(inputs, targets, h)
        self.update(opt, grads)
        return loss

    def generate(self, n, h, uniforms, temperature, greedy):
        """n ids from state h (H,), updated in place. Each id: logits = Why h + by, then argmax
        (greedy) or the first id whose cumulative softmax(logits / temperature) mass exceeds
        uniforms[k] times the total; then h steps on that id."""
        p = self.params
        out = np.empty(n, dtype=np.int32)
        for k in range(n):
            z = p["Why"] @ h + p["by"]
            if greedy:
                idx = int(np.argmax(z))
            else:
                e = np.exp((z - z.max()) / temperature)
                c = np.cumsum(e, dtype=np.float64)
                idx = min(int(np.searchsorted(c, uniforms[k] * c[-1], side="right")), self.V - 1)
            out[k] = idx
            h[...] = np.tanh(p["Wxh"][:, idx] + p["Whh"] @ h + p["bh"])
        return out
