"""The torch backend: the numpy backend's math on PyTorch tensors, on the CPU or a CUDA device.

One formulation on both devices; PyTorch runs it on its CPU kernels or on cuBLAS/CUDA kernels:
  - the input projection of a whole chunk is one gather of Wxh columns (index_select), never a
    one-hot matrix product, and its gradient one scatter-add (index_add_);
  - the recurrence is one in-place addmm + tanh per time step into a preallocated (T+1,B,H)
    buffer, and BPTT one addmm + mul per step;
  - the output layer, the softmax, the loss and every weight gradient are one call each for the
    whole chunk (time-major, so each is a single matrix product);
  - Adagrad is a few elementwise calls over the one flat parameter buffer.
The backward pass is written out rather than left to autograd: autograd would form Whh's gradient
as T small products and record a graph every iteration. A training iteration copies the ids and
h0 to the device without waiting (pinned staging on CUDA), and the loss and last state back in
one transfer: its one synchronisation.
"""
import numpy as np

from .._optional import cuda_available, require_torch
from .._params import num_params, pack, unflatten
from .._threads import apply_to_torch
from .numpy_backend import NumpyBackend

torch = require_torch("backend='torch'")
apply_to_torch()  # a fastrnn.set_num_threads() made before torch was loaded

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


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

    def __init__(self, vocab_size, hidden_size, dtype, device="cpu"):
        self.V, self.H, self.dtype = vocab_size, hidden_size, np.dtype(dtype)
        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)
        self.flat = torch.zeros(num_params(hidden_size, vocab_size),
                                dtype=TORCH_DTYPES[self.dtype], device=self.torch_device)
        self.params = unflatten(self.flat, hidden_size, vocab_size)
        self.reduce_grads = None
        self._work = {}
        self._train = None  # [grads | loss], a scratch like the parameters, the grads' views

    # -- storage -------------------------------------------------------------------------------
    def zeros(self):
        return torch.zeros_like(self.flat)

    def get_params(self):
        return self.to_dict(self.flat)

    def set_params(self, tensors):
        """Sets all five tensors (numpy arrays of the model dtype) in one host-to-device copy."""
        self.flat.copy_(torch.from_numpy(pack(tensors, self.H, self.V, self.dtype)))

    def to_flat(self, tensors):
        return torch.from_numpy(pack(tensors, self.H, self.V, self.dtype)).to(self.torch_device)

    def to_dict(self, flat):
        return super().to_dict(flat.detach().cpu().numpy())

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
            self._train = (buf, self.zeros(), unflatten(buf[:P], self.H, self.V))
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

    def forward_loss(self, inputs, targets, h):
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

    def loss_and_grads(self, inputs, targets, h, want_dh0=False):
        work = self._workspace(*inputs.shape)
        x, y = self._upload(work, h, inputs, targets)
        grads = self.zeros()
        loss, dh0 = self._loss_and_grads(x, y, work, unflatten(grads, self.H, self.V), want_dh0)
        out = self._fetch(loss, work.hs[-1], *([dh0] if want_dh0 else []))
        h[...] = out[1]
        return float(out[0]), grads, (out[2] if want_dh0 else None)

    def _check_optimizer(self, opt):
        if opt.name != "adagrad":
            raise ValueError(f"optimizer {opt.name!r} is not implemented on backend 'torch' "
                             f"(it has: adagrad)")
        mem = opt.state["mem"]
        if not (isinstance(mem, torch.Tensor) and mem.device == self.flat.device
                and mem.dtype == self.flat.dtype and mem.shape == self.flat.shape):
            raise ValueError("the optimizer's state does not live on this model's backend and "
                             "device; create the optimizer for this model")

    def _adagrad(self, opt, g, scratch):
        """The gist's update; clips g in place: mem += g*g, flat -= lr*g / sqrt(mem + eps)."""
        if opt.clip is not None:
            g.clamp_(-opt.clip, opt.clip)
        mem = opt.state["mem"]
        mem.addcmul_(g, g)
        torch.add(mem, opt.eps, out=scratch).sqrt_()
        self.flat.sub_(g.mul_(opt.lr).div_(scratch))

    def update(self, opt, grads):
        self._check_optimizer(opt)
        buf, scratch, _ = self._train_buffers()
        g = buf[:-1]
        g.copy_(grads)  # the caller's gradients stay unclipped
        self._adagrad(opt, g, scratch)

    def train_step(self, inputs, targets, h, opt):
        self._check_optimizer(opt)
        buf, scratch, g = self._train_buffers()
        work = self._workspace(*inputs.shape)
        x, y = self._upload(work, h, inputs, targets)
        buf[-1] = self._loss_and_grads(x, y, work, g, False)[0]
        if self.reduce_grads is not None:
            self.reduce_grads(buf)
        self._adagrad(opt, buf[:-1], scratch)
        loss, h[...] = self._fetch(buf[-1:], work.hs[-1])
        return float(loss[0])

    def generate(self, n, h, uniforms, temperature, greedy):
        p = self.params
        dev = self.torch_device
        hv = torch.from_numpy(h).to(dev, copy=True)
        u = torch.from_numpy(uniforms).to(dev)
        out = torch.empty(n, dtype=torch.int64, device=dev)
        for k in range(n):  # all on the device: no synchronisation until the end
            z = torch.addmv(p["by"], p["Why"], hv)
            if greedy:
                idx = torch.argmax(z).view(1)
            else:
                c = torch.cumsum(((z - z.max()) / temperature).exp_(), 0, dtype=torch.float64)
                idx = torch.searchsorted(c, (u[k] * c[-1]).view(1), right=True)
                idx.clamp_(max=self.V - 1)
            out[k:k + 1] = idx
            hv = torch.addmv(p["Wxh"].index_select(1, idx).view(-1), p["Whh"], hv)
            hv.add_(p["bh"]).tanh_()
        h[...] = hv.cpu().numpy()
        return out.cpu().numpy().astype(np.int32)
