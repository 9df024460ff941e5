"""The torch backend: the numpy backend's math on PyTorch tensors, on the CPU or a CUDA device.

One formulation on both devices; PyTorch runs it on its CPU kernels or on cuBLAS/CUDA kernels:
  - the input projection of a whole chunk is one gather of Wxh columns (index_select), never a
    one-hot matrix product, and its gradient one scatter-add (index_add_);
  - the recurrence is one in-place addmm + tanh per time step into a preallocated (T+1,B,H)
    buffer, and BPTT one addmm + mul per step;
  - the output layer, the softmax, the loss and every weight gradient are one call each for the
    whole chunk (time-major, so each is a single matrix product);
  - the optimizer update (Adagrad, SGD, RMSprop, Adam, with elementwise and global-norm
    clipping) is a few elementwise calls over the one flat parameter buffer, in the numpy
    backend's order of operations; the global norm stays on the device (no synchronisation).
The backward pass is written out rather than left to autograd: autograd would form Whh's gradient
as T small products and record a graph every iteration. A training iteration copies the ids and
h0 to the device without waiting (pinned staging on CUDA), and the loss and last state back in
one transfer: its one synchronisation.

Every other model (stacked rnn, lstm, gru; see fastrnn.backends.numpy_backend for the equations)
runs each layer through PyTorch's own fused op (torch._VF.rnn_tanh / rnn_relu / lstm / gru, the
ops behind nn.RNN / nn.LSTM / nn.GRU: cuDNN on CUDA, oneDNN or ATen on the CPU) on views of the
flat parameter tensor, the dropout masks multiplied in between, and autograd for the gradients,
which land in one flat tensor shaped like the parameters. Layer 0 reads one-hot rows, as those
ops take a dense input: a (B*T, V) x (V, G*H) product once per chunk, small next to the
recurrence for a character vocabulary.

precision="bf16" runs every model, min-char-rnn's included (with a zero recurrent bias), on
that stacked formulation inside torch.autocast(dtype=torch.bfloat16): PyTorch casts the
operands of the ops on its autocast list (matrix products, the CPU's fused RNN layers) to
bfloat16, and the logits are cast back to float32 before the softmax and the loss. On CUDA the
fused layers are not used in bf16 (autocast runs cuDNN's RNNs in float16, whatever the dtype
asked for): each layer is written out, one autocast product per step for the recurrence and one
for the input projection, the cells' pointwise math in float32.
"""
import math
import threading
import warnings

import numpy as np

from .._optional import cuda_available, require_torch
from .._params import check_precision, pack, unflatten
from .._threads import apply_to_torch
from .numpy_backend import (NumpyBackend, _as_rows, beam_backtrack, beam_select,
                            nan_logits_message, serialised)

torch = require_torch("backend='torch'")
apply_to_torch()  # a fastrnn.set_num_threads() made before torch was loaded

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
OPTIMIZER_NAMES = ("adagrad", "sgd", "rmsprop", "adam")
F = torch.nn.functional
# (cell, nonlinearity) -> PyTorch's fused op over a sequence, and its one-step cell
LAYER_OPS = {("rnn", "tanh"): (torch._VF.rnn_tanh, torch.rnn_tanh_cell),
             ("rnn", "relu"): (torch._VF.rnn_relu, torch.rnn_relu_cell),
             ("lstm", "tanh"): (torch._VF.lstm, torch.lstm_cell),
             ("gru", "tanh"): (torch._VF.gru, torch.gru_cell)}


class _FullPrecision:
    """Turns TF32 off for cuBLAS and cuDNN (cuDNN's RNNs use it by default on Ampere and later,
    a ~1e-3 relative error) while fastrnn's CUDA ops run, so CUDA matches the CPU; the caller's
    settings are restored after."""

    def __enter__(self):
        b = torch.backends
        self.saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32)
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


class _Nothing:
    def __enter__(self):
        pass

    def __exit__(self, *exc):
        pass


def resolve_device(device):
    """A torch.device for 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when usable, else the CPU)."""
    if device is None or device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    dev = None
    if isinstance(device, (str, torch.device)):
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            pass
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if dev.type == "cpu":
        return torch.device("cpu")
    if not cuda_available():
        raise ValueError(f"device={device!r} but CUDA is not usable here (torch "
                         f"{torch.__version__}, CUDA build {torch.version.cuda}); use "
                         f"device='cpu' or 'auto'")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA "
                         f"device(s) are visible")
    return torch.device("cuda", index)


class _Workspace:
    """Device buffers for a (B,T) chunk: states hs (T+1,B,H), BPTT deltas dh (T,B,H), the -1s
    subtracted at the targets (T*B,1), and the ids (2,T,B). Uploads go through host staging
    buffers: on CUDA pinned ones copied asynchronously (every call ends with a blocking fetch, so
    a staging buffer is never rewritten while a copy from it is pending); on the CPU the device
    buffers themselves."""

    def __init__(self, B, T, H, dtype, device):
        kw = dict(dtype=dtype, device=device)
        self.hs, self.dh = torch.empty(T + 1, B, H, **kw), torch.empty(T, B, H, **kw)
        self.minus_one = torch.full((T * B, 1), -1.0, **kw)
        self.ids = torch.empty(2, T, B, dtype=torch.int64, device=device)
        if device.type == "cpu":
            self.ids_host, self.h_host = self.ids, self.hs[0]
        else:
            self.ids_host = torch.empty(2, T, B, dtype=torch.int64).pin_memory()
            self.h_host = torch.empty(B, H, dtype=dtype).pin_memory()


class TorchBackend(NumpyBackend):
    """Parameters live on `device` as one flat tensor with named views, like the other backends.

    `reduce_grads`, when set (by fastrnn.distributed), is called in train_step with the flat
    tensor [gradients | loss] and must sum it over the replicas in place.
    """
    name = "torch"

    def __init__(self, spec, dtype, device="cpu", precision="fp32"):
        self.spec = spec
        self.V, self.H, self.L = spec.vocab_size, spec.hidden_size, spec.num_layers
        self.dtype = np.dtype(dtype)
        self.precision = check_precision(precision, self.dtype)
        self._bf16 = precision == "bf16"
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.flat = torch.zeros(spec.num_params, dtype=TORCH_DTYPES[self.dtype],
                                device=self.torch_device)
        self.params = unflatten(self.flat, spec)
        self.reduce_grads = None
        self.lock = threading.RLock()
        for name, value in self._new_scratch().items():
            setattr(self, name, value)

    def _new_scratch(self):
        return {"_work": {},         # a _Workspace by (B, T)
                "_zero_bias": None,  # min-char-rnn's model's absent recurrent bias (bf16 mode)
                "_train": None,      # [grads | loss], a scratch like the parameters, the views
                "_norm_buf": None}   # float64 scratch for a float32 model's gradient norm

    def _placed(self, flat):
        return flat

    # -- storage -------------------------------------------------------------------------------
    def zeros(self):
        return torch.zeros_like(self.flat)

    @serialised
    def get_params(self):
        return self.to_dict(self.flat)

    @serialised
    def set_params(self, tensors):
        """Sets all named tensors (numpy arrays of the model dtype) in one host-to-device copy."""
        self.flat.copy_(torch.from_numpy(pack(tensors, self.spec, self.dtype)))

    def to_flat(self, tensors):
        return torch.from_numpy(pack(tensors, self.spec, self.dtype)).to(self.torch_device)

    def to_dict(self, flat):
        return super().to_dict(flat.detach().cpu().numpy())

    def to_numpy(self, buf):
        """A device tensor of this backend (parameters, optimizer state) as a numpy array."""
        return buf.detach().cpu().numpy()

    @serialised
    def copy_into(self, buf, a):
        """Overwrites a device tensor of this backend with the values of numpy array `a`."""
        buf.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=self.dtype)).reshape(buf.shape))

    # -- buffers and transfers -----------------------------------------------------------------
    def _workspace(self, B, T):
        """The buffers for a (B,T) chunk (a _Workspace), allocated on first use of that shape."""
        work = self._work.get((B, T))
        if work is None:
            if len(self._work) > 8:  # shapes that change every call (evaluation tails): forget
                self._work.clear()
            work = _Workspace(B, T, self.H, self.flat.dtype, self.torch_device)
            self._work[(B, T)] = work
        return work

    def _train_buffers(self):
        if self._train is None:
            P = self.flat.numel()
            buf = torch.zeros(P + 1, dtype=self.flat.dtype, device=self.torch_device)
            self._train = (buf, self.zeros(), unflatten(buf[:P], self.spec))
        return self._train

    @staticmethod
    def _upload(work, h, *ids):
        """Puts h (B,H) into work.hs[0] and the (B,T) id arrays, time-major, into work.ids;
        returns those ids (k,T,B) on the device. No synchronisation (see _Workspace)."""
        staged = work.ids_host.numpy()
        for i, a in enumerate(ids):
            staged[i] = a.T
        work.h_host.numpy()[...] = h
        if work.ids is not work.ids_host:
            work.ids.copy_(work.ids_host, non_blocking=True)
            work.hs[0].copy_(work.h_host, non_blocking=True)
        return work.ids[:len(ids)]

    @staticmethod
    def _fetch(*tensors):
        """Host (numpy) copies of device tensors, in one transfer."""
        host = torch.cat([t.reshape(-1) for t in tensors]).cpu().numpy()
        out, i = [], 0
        for t in tensors:
            out.append(host[i:i + t.numel()].reshape(tuple(t.shape)))
            i += t.numel()
        return out

    # -- math ----------------------------------------------------------------------------------
    def _forward(self, x, hs):
        """hs[0] holds h0; fills hs[1:] with h_1..h_T for time-major ids x (T,B)."""
        p = self.params
        torch.index_select(p["Wxh"].t(), 0, x.reshape(-1), out=hs[1:].view(-1, self.H))
        hs[1:].add_(p["bh"])
        Whh_t = p["Whh"].t()
        for t in range(x.shape[0]):
            hs[t + 1].addmm_(hs[t], Whh_t).tanh_()

    def _log_probs(self, hs):
        """log softmax(Why h_t + by) for the whole chunk, (T*B, V)."""
        p = self.params
        z = torch.addmm(p["by"], hs[1:].view(-1, self.H), p["Why"].t())
        return torch.log_softmax(z, dim=1)

    def _loss_and_grads(self, x, y, work, g, want_dh0):
        """Forward and BPTT over time-major ids x, y (T,B) with hs[0] = h0; gradients go into
        the views g. Returns (summed loss, dL/dh0 or None) as device tensors."""
        p, H = self.params, self.H
        hs, dh = work.hs, work.dh
        T = x.shape[0]
        self._forward(x, hs)
        hs1, dhf = hs[1:].view(-1, H), dh.view(-1, H)
        dz = self._log_probs(hs)
        loss = torch.nn.functional.nll_loss(dz, y.reshape(-1), reduction="sum")
        dz.exp_().scatter_add_(1, y.reshape(-1, 1), work.minus_one)  # softmax - onehot
        torch.mm(dz.t(), hs1, out=g["Why"])
        torch.sum(dz, 0, out=g["by"])
        torch.mm(dz, p["Why"], out=dhf)                             # dL/dh_t via the output
        dtanh = torch.mul(hs1, hs1).neg_().add_(1).view(T, -1, H)   # 1 - h_t^2
        dh[T - 1].mul_(dtanh[T - 1])
        for t in range(T - 2, -1, -1):                              # dh[t]: dL/d(pre-tanh t)
            dh[t].addmm_(dh[t + 1], p["Whh"]).mul_(dtanh[t])
        torch.mm(dhf.t(), hs[:-1].view(-1, H), out=g["Whh"])
        torch.sum(dhf, 0, out=g["bh"])
        g["Wxh"].zero_()
        g["Wxh"].t().index_add_(0, x.reshape(-1), dhf)              # scatter into input columns
        return loss, (dh[0] @ p["Whh"] if want_dh0 else None)

    @serialised
    def forward_loss(self, inputs, targets, h):
        if self._bf16 or not self.spec.legacy:
            return self._stack_forward_loss(inputs, targets, h)
        work = self._workspace(*inputs.shape)
        hs = work.hs
        if targets is None:
            self._forward(self._upload(work, h, inputs)[0], hs)
            h[...] = self._fetch(hs[-1])[0]
            return 0.0
        x, y = self._upload(work, h, inputs, targets)
        self._forward(x, hs)
        loss = torch.nn.functional.nll_loss(self._log_probs(hs), y.reshape(-1), reduction="sum")
        loss, h[...] = self._fetch(loss, hs[-1])
        return float(loss)

    @serialised
    def loss_and_grads(self, inputs, targets, h, want_dh0=False, masks=None):
        if self._bf16 or not self.spec.legacy:
            return self._stack_loss_and_grads(inputs, targets, h, want_dh0, masks)
        work = self._workspace(*inputs.shape)
        x, y = self._upload(work, h, inputs, targets)
        grads = self.zeros()
        loss, dh0 = self._loss_and_grads(x, y, work, unflatten(grads, self.spec), want_dh0)
        out = self._fetch(loss, work.hs[-1], *([dh0] if want_dh0 else []))
        h[...] = out[1]
        return float(out[0]), grads, (out[2] if want_dh0 else None)

    # -- every other model: PyTorch's fused layer ops and autograd ------------------------------
    def _ids(self, a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.torch_device)

    def _states(self, h, grad=False):
        """Device copies of the state's (L,B,H) arrays (a lone legacy-shaped array as (1,B,H))."""
        return [torch.tensor(np.ascontiguousarray(a), dtype=self.flat.dtype,
                             device=self.torch_device).requires_grad_(grad)
                for a in self._stack(h)]

    def _masks(self, masks, B, T):
        """The dropout masks (L-1,B,T,H) on the device, or None when there are none to apply."""
        if masks is None or self.L == 1:
            return None
        want = (self.L - 1, B, T, self.H)
        if np.shape(masks) != want:
            raise ValueError(f"dropout masks have shape {np.shape(masks)}; expected {want}")
        return torch.from_numpy(np.ascontiguousarray(masks, dtype=self.dtype)).to(
            self.torch_device)

    def _layer_weights(self, p, k):
        """Layer k's (W_ih, W_hh, b_ih, b_hh) from the views p; min-char-rnn's model (run
        stacked in bf16 mode) gets a zero b_hh."""
        names = self.spec.layer_names(k)
        if names[3] is None and self._zero_bias is None:
            self._zero_bias = torch.zeros(self.H, dtype=self.flat.dtype, device=self.torch_device)
        return [p[n] if n is not None else self._zero_bias for n in names]

    def _autocast(self):
        """bf16 mode's context (see the module docstring); nothing in fp32 mode."""
        if not self._bf16:
            return _Nothing()
        return torch.autocast(device_type=self.torch_device.type, dtype=torch.bfloat16)

    def _stack_run(self, p, x, states, masks, train):
        """The stack over ids x (B,T) on device, from `states` (list of (L,B,H) tensors), with
        the named parameter views p. Returns (the top layer's outputs (B,T,H), the last states
        as a list of (L,B,H) tensors of the model dtype). train: what the fused ops need for a
        backward (cuDNN keeps its reserve space only then; dropout is always 0 inside them).
        Call it inside self._autocast()."""
        if self._bf16 and (self.torch_device.type != "cpu" or self._stepwise_bf16):
            return self._stack_steps(p, x, states, masks)
        run = LAYER_OPS[(self.spec.cell, self.spec.nonlinearity)][0]
        lstm = self.spec.cell == "lstm"
        inp = F.one_hot(x, self.V).to(self.flat.dtype)
        last = [[] for _ in states]
        with warnings.catch_warnings():
            # cuDNN copies views that are not its own packed buffer, and says so every call
            warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
            for k in range(self.L):
                w = self._layer_weights(p, k)
                if lstm:
                    hx = (states[0][k:k + 1], states[1][k:k + 1])
                    out, h, c = run(inp, hx, w, True, 1, 0.0, train, False, True)
                    last[1].append(c)
                else:
                    out, h = run(inp, states[0][k:k + 1], w, True, 1, 0.0, train, False, True)
                last[0].append(h)
                inp = out if masks is None or k == self.L - 1 else out * masks[k]
        # (autocast's CPU layers return bfloat16 outputs and states)
        return out, [torch.cat(parts).to(self.flat.dtype) for parts in last]

    # bf16 on the CPU: the fused layers under autocast unless this is set (tests set it to run
    # the CUDA formulation on the CPU)
    _stepwise_bf16 = False

    def _stack_steps(self, p, x, states, masks):
        """_stack_run written out per layer and step, for bf16 mode on CUDA: layer 0's input a
        gather of W_ih columns (exact), the input projections of later layers and each step's
        recurrent product one autocast product (bfloat16 operands), cast back to float32 for
        the biases and the cells' pointwise math (numpy_backend's equations); autograd for
        BPTT."""
        B, T = x.shape
        cell, relu = self.spec.cell, self.spec.nonlinearity == "relu"
        H = self.H
        lstm = cell == "lstm"
        last = [[] for _ in states]
        inp = None
        for k in range(self.L):
            w_ih, w_hh, b_ih, b_hh = self._layer_weights(p, k)
            if k == 0:
                gx = w_ih.t().index_select(0, x.reshape(-1)).view(B, T, -1) + b_ih
            else:
                gx = torch.matmul(inp, w_ih.t()).float() + b_ih
            h = states[0][k]
            c = states[1][k] if lstm else None
            outs = []
            for t in range(T):
                gh = torch.mm(h, w_hh.t()).float() + b_hh
                a = gx[:, t]
                if cell == "rnn":
                    h = torch.relu(a + gh) if relu else torch.tanh(a + gh)
                elif lstm:
                    i, f, g, o = (a + gh).chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                else:
                    r = torch.sigmoid(a[:, :H] + gh[:, :H])
                    z = torch.sigmoid(a[:, H:2 * H] + gh[:, H:2 * H])
                    n = torch.tanh(a[:, 2 * H:] + r * gh[:, 2 * H:])
                    h = (1 - z) * n + z * h
                outs.append(h)
            out = torch.stack(outs, 1)
            last[0].append(h)
            if lstm:
                last[1].append(c)
            inp = out if masks is None or k == self.L - 1 else out * masks[k]
        return out, [torch.stack(parts) for parts in last]

    def _exact(self):
        """The context fastrnn's CUDA math runs in (see _FullPrecision)."""
        return _FullPrecision() if self.torch_device.type == "cuda" else _Nothing()

    def _head_loss(self, p, out, y):
        z = torch.addmm(p["by"], out.reshape(-1, self.H), p["Why"].t())
        # float32 softmax and loss (autocast's product gives bfloat16 logits in bf16 mode)
        return F.cross_entropy(z.to(self.flat.dtype), y.reshape(-1), reduction="sum")

    def _put_state(self, h, values):
        for a, v in zip(self._stack(h), values):
            a[...] = v

    def _stack_forward_loss(self, inputs, targets, h):
        with torch.no_grad(), self._exact(), self._autocast():
            out, last = self._stack_run(self.params, self._ids(inputs), self._states(h), None,
                                        False)
            if targets is None:
                self._put_state(h, self._fetch(*last))
                return 0.0
            loss = self._head_loss(self.params, out, self._ids(targets))
            host = self._fetch(loss, *last)
        self._put_state(h, host[1:])
        return float(host[0])

    def _stack_grads(self, inputs, targets, h, want_dh0, masks, g):
        """Autograd through the fused ops; the gradients go into the named views g of a flat
        tensor. Returns (loss, last states, gradients wrt the initial states) as device tensors.
        Each named tensor is its own leaf (a view of the parameters): gradients of views of
        one flat leaf would each be scattered into a zeroed buffer of the whole flat size."""
        p = {name: view.detach().requires_grad_() for name, view in self.params.items()}
        states = self._states(h, grad=want_dh0)
        with torch.enable_grad(), self._exact():
            with self._autocast():  # the forward pass only, as PyTorch's AMP recipe has it
                out, last = self._stack_run(p, self._ids(inputs), states,
                                            self._masks(masks, *inputs.shape), True)
                loss = self._head_loss(p, out, self._ids(targets))
            grads = torch.autograd.grad(loss, list(p.values()) + (states if want_dh0 else []))
        for name, grad in zip(p, grads):
            g[name].copy_(grad)
        return loss.detach(), [a.detach() for a in last], list(grads[len(p):])

    def _stack_loss_and_grads(self, inputs, targets, h, want_dh0, masks):
        grads = self.zeros()
        loss, last, dstate = self._stack_grads(inputs, targets, h, want_dh0, masks,
                                               unflatten(grads, self.spec))
        host = self._fetch(loss, *last, *dstate)
        n = len(last)
        self._put_state(h, host[1:1 + n])
        dh0 = None
        if want_dh0:
            dh0 = (host[1 + n].reshape(h.shape) if isinstance(h, np.ndarray)
                   else tuple(host[1 + n:]))
        return float(host[0]), grads, dh0

    def _stack_train_step(self, inputs, targets, h, opt, grad_scale, masks):
        buf, scratch, g = self._train_buffers()
        loss, last, _ = self._stack_grads(inputs, targets, h, False, masks, g)
        buf[-1] = loss
        if self.reduce_grads is not None:
            self.reduce_grads(buf)
        self._update(opt, buf[:-1], scratch, grad_scale)
        host = self._fetch(buf[-1:], *last)
        self._put_state(h, host[1:])
        return float(host[0][0])

    def _check_optimizer(self, opt):
        if opt.name not in OPTIMIZER_NAMES:
            raise ValueError(f"unknown optimizer {opt.name!r}; backend 'torch' has "
                             f"{', '.join(OPTIMIZER_NAMES)}")
        for name in opt.state_names:
            buf = opt.state.get(name)
            if not (isinstance(buf, torch.Tensor) and buf.device == self.flat.device
                    and buf.dtype == self.flat.dtype and buf.shape == self.flat.shape):
                raise ValueError(f"the optimizer's state {name!r} does not live on this model's "
                                 f"backend and device; create the optimizer for this model")

    def _scalar(self, value):
        """A divisor for elementwise ops: on CUDA a 0-dim device tensor (CUDA turns division by
        a host scalar into a product with its reciprocal, a rounding numpy does not make)."""
        if self.torch_device.type == "cpu":
            return value
        return torch.full((), value, dtype=self.flat.dtype, device=self.torch_device)

    def _clip_norm_scale(self, opt, src, grad_scale, scratch):
        """grad_scale times clip_norm / (norm + 1e-6) where that is < 1, else grad_scale, as a
        0-dim device tensor of the model dtype; the norm of grad_scale * src is taken in float64
        (in `scratch` for a float64 model). Computed on the device: no synchronisation."""
        if self.flat.dtype == torch.float64:
            gd = src if grad_scale == 1.0 else torch.mul(src, grad_scale, out=scratch)
        else:
            if self._norm_buf is None:
                self._norm_buf = torch.empty(self.flat.shape, dtype=torch.float64,
                                             device=self.torch_device)
            gd = self._norm_buf
            gd.copy_(src)
            gd.mul_(grad_scale)
        norm = torch.dot(gd, gd).sqrt_()
        bound = torch.full((), opt.clip_norm, dtype=torch.float64, device=self.torch_device)
        factor = torch.div(bound, norm.add_(1e-6))
        scale = torch.where(factor < 1, factor * grad_scale, grad_scale)
        return scale.to(self.flat.dtype)

    def _update(self, opt, g, scratch, grad_scale, src=None):
        """The numpy backend's update, in its order of operations, elementwise over the flat
        buffers. g (the gradient scratch) is overwritten; the gradients are read from src, or
        from g itself when src is None."""
        src = g if src is None else src
        scale = grad_scale
        if opt.clip_norm is not None and opt.clip_norm < math.inf:
            scale = self._clip_norm_scale(opt, src, grad_scale, scratch)
        torch.mul(src, scale, out=g)
        if opt.clip is not None and opt.clip < math.inf:
            g.clamp_(-opt.clip, opt.clip)
        s, t = scratch, opt.steps + 1
        lr, eps = opt.lr, opt.eps
        if opt.name == "adagrad":              # mem += g*g; p -= lr*g / sqrt(mem + eps)
            mem = opt.state["mem"]
            mem.add_(torch.mul(g, g, out=s))
            torch.add(mem, eps, out=s).sqrt_()
            g.mul_(lr).div_(s)
        elif opt.name == "sgd":                # p -= lr*g
            g.mul_(lr)
        elif opt.name == "rmsprop":            # ms = b2*ms + c2*g*g; p -= lr*g / (sqrt(ms) + eps)
            ms = opt.state["mean_square"]
            torch.mul(g, g, out=s).mul_(1.0 - opt.beta2)
            ms.mul_(opt.beta2).add_(s)
            torch.sqrt(ms, out=s).add_(eps)
            g.mul_(lr).div_(s)
        else:                                  # adam
            m, v = opt.state["m"], opt.state["v"]
            bc1, bc2 = self._scalar(1.0 - opt.beta1 ** t), self._scalar(1.0 - opt.beta2 ** t)
            m.mul_(opt.beta1).add_(torch.mul(g, 1.0 - opt.beta1, out=s))
            torch.mul(g, g, out=s).mul_(1.0 - opt.beta2)
            v.mul_(opt.beta2).add_(s)
            torch.div(v, bc2, out=s).sqrt_().add_(eps)   # sqrt(v / bc2) + eps
            torch.div(m, bc1, out=g).mul_(lr).div_(s)    # lr * (m / bc1) / that
        self.flat.sub_(g)
        opt.steps = t

    @serialised
    def update(self, opt, grads, grad_scale=1.0):
        self._check_optimizer(opt)
        if not isinstance(grads, torch.Tensor):
            grads = torch.from_numpy(np.ascontiguousarray(grads, dtype=self.dtype))
        grads = grads.to(self.torch_device)
        buf, scratch, _ = self._train_buffers()
        self._update(opt, buf[:-1], scratch, grad_scale, src=grads)  # grads stay unchanged

    @serialised
    def train_step(self, inputs, targets, h, opt, grad_scale=1.0, masks=None):
        self._check_optimizer(opt)
        if self._bf16 or not self.spec.legacy:
            return self._stack_train_step(inputs, targets, h, opt, grad_scale, masks)
        buf, scratch, g = self._train_buffers()
        work = self._workspace(*inputs.shape)
        x, y = self._upload(work, h, inputs, targets)
        buf[-1] = self._loss_and_grads(x, y, work, g, False)[0]
        if self.reduce_grads is not None:
            self.reduce_grads(buf)
        self._update(opt, buf[:-1], scratch, grad_scale)
        loss, h[...] = self._fetch(buf[-1:], work.hs[-1])
        return float(loss[0])

    @serialised
    def generate(self, n, h, uniforms, temperature, greedy, top_k=0, top_p=1.0):
        """The numpy backend's rule (see its docstring), all on the device: no synchronisation
        until the end. Top-k ranks by a stable descending sort of the logits, so ties rank the
        lower id first; the top-p cut is the count of rank-order cumulative masses below top_p
        of their total, plus one (numpy's first index reaching it, as the sums only grow). Each
        id's highest logit is kept (NaN if any logit is), to raise as numpy does at the end."""
        p, V = self.params, self.V
        dev = self.torch_device
        legacy = self.spec.legacy
        hv = torch.from_numpy(h).to(dev, copy=True) if legacy else None
        states = None if legacy else self._states(h)   # (L,1,H) each
        out = torch.empty(n, dtype=torch.int64, device=dev)
        peaks = torch.empty(n, dtype=self.flat.dtype, device=dev)
        n_rank = top_k if 0 < top_k < V else V
        filtered = n_rank < V or top_p < 1
        if not greedy:
            u = torch.from_numpy(np.ascontiguousarray(uniforms, dtype=np.float64)).to(dev)
            temp = self._scalar(temperature)
            ids = torch.arange(V, device=dev)
            rank = torch.empty(V, dtype=torch.int64, device=dev)
        for k in range(n):
            z = torch.addmv(p["by"], p["Why"], hv if legacy else states[0][-1, 0])
            m = torch.amax(z, 0, keepdim=True, out=peaks[k:k + 1])  # NaN if any logit is
            if greedy:
                idx = torch.argmax(z).view(1)
            else:
                e = (z - m).div_(temp).exp_()
                e = torch.where(z == m, 1, e)  # the limit where m is infinite (z - m is NaN)
                if filtered:
                    order = torch.sort(z, descending=True, stable=True).indices
                    n_keep = n_rank
                    if top_p < 1:
                        cum = torch.cumsum(e[order[:n_rank]], 0, dtype=torch.float64)
                        n_keep = (cum < cum[-1] * top_p).sum() + 1
                    rank.scatter_(0, order, ids)  # each id's place in rank order
                    e = torch.where(rank < n_keep, e, 0)
                c = torch.cumsum(e, 0, dtype=torch.float64)
                idx = torch.searchsorted(c, (u[k] * c[-1]).view(1), right=True)
                # rounding left no id above the target: the last one with mass
                idx = torch.where(idx < V, idx, torch.where(e != 0, ids, -1).amax())
            out[k:k + 1] = idx
            if not legacy:
                with self._exact():
                    self._stack_step(idx, states)
                continue
            hv = torch.addmv(p["Wxh"].index_select(1, idx).view(-1), p["Whh"], hv)
            hv.add_(p["bh"]).tanh_()
        nan_at = torch.isnan(peaks).nonzero().cpu()
        if len(nan_at):
            raise FloatingPointError(nan_logits_message(int(nan_at[0, 0]), self.dtype))
        if legacy:
            h[...] = hv.cpu().numpy()
        else:
            self._put_state(h, self._fetch(*states))
        return out.cpu().numpy().astype(np.int32)

    def _stack_step(self, idx, states):
        """Advances the states (list of (L,1,H) tensors) by the input id idx ((1,) on the
        device), one fused cell call per layer."""
        cell = LAYER_OPS[(self.spec.cell, self.spec.nonlinearity)][1]
        x = F.one_hot(idx, self.V).to(self.flat.dtype)
        for k in range(self.L):
            w = [self.params[n] for n in self.spec.layer_names(k)]
            if len(states) == 2:
                h, c = cell(x, (states[0][k], states[1][k]), *w)
                states[1][k] = c
            else:
                h = cell(x, states[0][k], *w)
            states[0][k] = h
            x = h

    @serialised
    def beam_search(self, n, h, beam):
        """The numpy backend's beam search (its beam_select, in float64 on the host), with the
        K hypotheses' states a batch on the device: the head and the step one product each for
        the whole batch (the cell ops generate uses)."""
        p = self.params
        dev = self.torch_device
        legacy = self.spec.legacy
        states = self._states(_as_rows(h, self.L, self.H))  # (L,1,H) each; legacy: (1,1,H)
        scores = np.zeros(1)
        ids, parents = [], []
        with torch.no_grad(), self._exact():
            for t in range(n):
                z = torch.addmm(p["by"], states[0][-1], p["Why"].t())
                rows, last, scores = beam_select(self._fetch(z)[0], scores, beam, t, self.dtype)
                ids.append(last)
                parents.append(rows)
                index = torch.from_numpy(rows).to(dev)
                states = [s.index_select(1, index) for s in states]
                if t + 1 == n:
                    break
                idx = self._ids(last)
                if legacy:
                    hv = torch.addmm(p["Wxh"].t().index_select(0, idx), states[0][0],
                                     p["Whh"].t())
                    states[0][0] = hv.add_(p["bh"]).tanh_()
                else:
                    self._stack_step(idx, states)
        return beam_backtrack(ids, parents), (float(scores[0]) / n if n else 0.0)
