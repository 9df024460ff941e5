"""The cython backend: the numpy backend's math, run by the compiled kernels in fastrnn._kernels.

A whole training iteration (forward over the chunk, BPTT, clipping, optimizer update) is one call
into compiled code that releases the GIL (and splits a large enough batch over the threads set by
fastrnn.set_num_threads). Scratch memory for a (B,T) chunk is allocated once and reused, by one
call at a time (see the backend lock in numpy_backend); the kernels read the ids from copies of
their own, so no other thread can change an id between its check and its use.

precision="bf16" runs every model, min-char-rnn's included, through the stack kernels with
bf16=True (bfloat16 operands, float32 sums; see numpy_backend); generation and beam search keep
their float32 kernels. The kernels name the path bf16 mode runs on (bf16_path(); "fp32" is plain
float32 products, the fallback every build has); $FASTRNN_BF16 chooses another at import, as
set_bf16_path(name) does.
"""
import importlib
import os

import numpy as np

from .._isa import ISA_VARIANTS, hot_module  # noqa: F401 (ISA_VARIANTS: re-exported)
from .._params import aligned_empty
from .._threads import get_num_threads
from .numpy_backend import NumpyBackend, serialised

CELL_CODES = {"rnn": 0, "lstm": 1, "gru": 2}  # the stack kernels' cell codes

# A stacked model's generation splits each character's products over the threads set by
# fastrnn.set_num_threads once they read this many bytes of weights per character: below it the
# team's barrier (one per layer and character) costs more than the second core brings. Measured
# on 2 cores, float32, chars/s on two threads against one: lstm 1 x 64 0.75x, rnn 3 x 128 0.75x,
# lstm 1 x 128 0.79x, gru 2 x 128 1.07x, lstm 2 x 128 1.22x, rnn 3 x 256 1.28x, lstm 2 x 512
# 1.9x, and 3-3.9x where the halves fit in the two cores' L2 but the whole does not in one's
# (lstm 2 x 256, gru 2 x 256, lstm 1 x 512).
SAMPLE_TEAM_BYTES = 512 * 1024


def sample_threads(spec, itemsize):
    """Threads for a stacked model's generation: fastrnn.get_num_threads() when a character
    reads at least SAMPLE_TEAM_BYTES of weights (the recurrent matrices above layer 0's gathered
    row, and the head), else 1."""
    G, H, L, V = spec.gates, spec.hidden_size, spec.num_layers, spec.vocab_size
    values = sum(G * H * H * (2 if k > 0 else 1) for k in range(L)) + V * H
    return get_num_threads() if values * itemsize >= SAMPLE_TEAM_BYTES else 1


def load_kernels(isa=None):
    """The kernels (fastrnn._kernels) on the fastest hot module this CPU runs, or on the one
    named by isa / $FASTRNN_ISA ("avx512", "avx2", "baseline"; see fastrnn._isa). Raises
    ImportError if none (or not that one) loads."""
    hot = hot_module(isa)
    return importlib.import_module("fastrnn._kernels").bound(hot)


def has_bf16(kernels):
    """Whether a kernel module has the bf16 mode (kernels built before it lack it)."""
    return kernels is not None and hasattr(kernels, "bf16_path")


class _Bf16EnvError(ImportError):
    """A $FASTRNN_BF16 the kernels refuse."""


def apply_bf16_env(kernels):
    """Sets the bf16 path named by $FASTRNN_BF16 (one of set_bf16_path's names, "fp32" among
    them), if set; a name the kernels refuse (unknown, or not runnable on this CPU or build) is
    an ImportError, as a bad $FASTRNN_ISA is."""
    name = os.environ.get("FASTRNN_BF16")
    if not name:
        return
    if not has_bf16(kernels):
        raise _Bf16EnvError(f"FASTRNN_BF16={name!r}: these kernels ({kernels.__name__}) were "
                            f"built without the bf16 mode; rebuild them, or unset FASTRNN_BF16")
    try:
        kernels.set_bf16_path(name)
    except ValueError as exc:
        raise _Bf16EnvError(f"FASTRNN_BF16={name!r}: {exc}; unset it, or name a path the "
                            f"kernels take") from None


def bf16_path():
    """The name of the path precision="bf16" runs on here ("fp32": plain float32 products), or
    None when the kernels lack the bf16 mode."""
    return _kernels.bf16_path() if has_bf16(_kernels) else None


def bf16_description(kernels):
    """The bf16 path of a kernel module in words, for reports beside its BUILD_ISA."""
    if not has_bf16(kernels):
        return "none (kernels built without the bf16 mode)"
    path = kernels.bf16_path()
    return path + (" (float32 products)" if path == "fp32" else "")


try:
    _kernels = load_kernels()
    apply_bf16_env(_kernels)
    _IMPORT_ERROR = None
except ImportError as exc:  # the extension was not built, or was built for another Python
    _kernels, _IMPORT_ERROR = None, exc


class CythonBackend(NumpyBackend):
    name = "cython"

    @classmethod
    def check_available(cls):
        if isinstance(_IMPORT_ERROR, _Bf16EnvError):  # the kernels are fine: the setting is not
            raise ImportError(f"fastrnn's compiled kernels: {_IMPORT_ERROR}")
        if _kernels is None:
            raise ImportError(
                f"fastrnn's compiled kernels (fastrnn._kernels) could not be imported: "
                f"{_IMPORT_ERROR}. Rebuild them with `pip install .` from the source tree (needs a "
                f"C compiler and Cython>=3), or `python setup.py build_ext --inplace` for "
                f"a development checkout. backend='numpy' works without them.")

    def __init__(self, spec, dtype, device="cpu", precision="fp32"):
        super().__init__(spec, dtype, device, precision)
        if self._bf16 and not has_bf16(_kernels):
            raise ValueError(f"precision='bf16' on backend 'cython' needs kernels with the bf16 "
                             f"mode, and {_kernels.__name__} was built without it (rebuild it "
                             f"from a source tree that has it); backend='numpy' or 'torch' "
                             f"run bf16 meanwhile")
        self._offsets = spec.offsets()  # the stack kernels' layout table (stacked models)
        # the fused step's float32 or float64 version itself: choosing it from the arrays' type
        # at each call took 0.6 us (of 3.7 for a tiny model's step)
        self._train_step = _kernels.train_step[
            "float" if np.dtype(self.dtype) == np.float32 else "double"]

    def _new_scratch(self):
        return {"_work": {},           # chunk scratch by (B, T, threads)
                "_grads": None,        # gradient scratch of the fused train step
                "_undo": None,         # old values saved by the guarded train step
                "_sample_work": None}  # the sampler's scratch

    def _workspace(self, B, T, threads):
        """The scratch buffer for a (B,T) chunk on `threads` threads, allocated on first use."""
        work = self._work.get((B, T, threads))
        if work is None:
            if len(self._work) > 8:  # shapes that change every call (evaluation tails): forget
                self._work.clear()
            work = aligned_empty(_kernels.work_size(B, T, self.H, self.V, threads), self.dtype)
            self._work[(B, T, threads)] = work
        return work

    def _chunk_args(self, inputs):
        """work and threads for a chunk: the kernels split a large enough batch over the threads
        set by fastrnn.set_num_threads (see _kernels.chunk_parts)."""
        threads = get_num_threads()
        return self._workspace(*inputs.shape, threads), threads

    @serialised
    def forward_loss(self, inputs, targets, h):
        if self._bf16 or not self.spec.legacy:
            st = self._states_of(h)
            work, threads = self._stack_chunk_args(inputs)
            return _kernels.stack_forward_loss(self.flat, *self._stack, inputs, targets, st[0],
                                               _c(st), work, threads=threads, **self._mode)
        work, threads = self._chunk_args(inputs)
        return _kernels.forward_loss(self.flat, inputs, targets, h, work, self.H, self.V,
                                     threads=threads)

    @serialised
    def loss_and_grads(self, inputs, targets, h, want_dh0=False, masks=None):
        if self._bf16 or not self.spec.legacy:
            return self._stack_loss_and_grads(inputs, targets, h, want_dh0, masks)
        grads = self.zeros()
        dh0 = np.empty_like(h) if want_dh0 else None
        work, threads = self._chunk_args(inputs)
        loss = _kernels.loss_and_grads(self.flat, grads, inputs, targets, h, work, self.H,
                                       self.V, dh0, threads=threads)
        return loss, grads, dh0

    @staticmethod
    def _states(opt):
        """The optimizer's first and second state buffers (None where it has fewer)."""
        names = opt.state_names
        return (opt.state[names[0]] if names else None,
                opt.state[names[1]] if len(names) > 1 else None)

    @serialised
    def update(self, opt, grads, grad_scale=1.0):
        code = _kernels.OPTIMIZERS.get(opt.name)
        if code is None:
            return super().update(opt, grads, grad_scale)
        mem, mem2 = self._states(opt)
        _kernels.optimizer_update(self.flat, grads, mem, mem2, code, opt.lr, opt.eps, opt.clip,
                                  opt.beta1, opt.beta2, opt.steps + 1, opt.clip_norm, grad_scale)
        opt.steps += 1

    def train_step(self, inputs, targets, h, opt, grad_scale=1.0, masks=None):
        code = _kernels.OPTIMIZERS.get(opt.name)
        if code is None:
            return super().train_step(inputs, targets, h, opt, grad_scale, masks)
        if self._bf16 or not self.spec.legacy:
            return self._stack_train_step(inputs, targets, h, opt, grad_scale, masks, code, False)
        # the lock (see serialised) taken by hand in the steps a trainer makes every iteration:
        # acquire and release cost half of a `with` block, a third of the decorator
        self.lock.acquire()
        try:
            if self._grads is None:
                self._grads = self.zeros()
            mem, mem2 = self._states(opt)
            work, threads = self._chunk_args(inputs)
            loss = self._train_step(self.flat, self._grads, mem, inputs, targets, h, work, self.H,
                                    self.V, code, opt.lr, opt.eps, opt.clip, mem2, opt.beta1,
                                    opt.beta2, opt.steps + 1, opt.clip_norm, grad_scale,
                                    threads=threads)
            opt.steps += 1
        finally:
            self.lock.release()
        return loss

    def train_step_guarded(self, inputs, targets, h, opt, grad_scale=1.0, masks=None):
        """The fused step, guarded inside the kernel: it saves the old values it overwrites as
        it updates, and puts them back if any new one is not finite (see _kernels.train_step)."""
        code = _kernels.OPTIMIZERS.get(opt.name)
        if code is None:
            return super().train_step_guarded(inputs, targets, h, opt, grad_scale, masks)
        if self._bf16 or not self.spec.legacy:
            return self._stack_train_step(inputs, targets, h, opt, grad_scale, masks, code, True)
        self.lock.acquire()
        try:
            if self._grads is None:
                self._grads = self.zeros()
            self._undo_buffer(code)
            mem, mem2 = self._states(opt)
            work, threads = self._chunk_args(inputs)
            loss, taken = self._train_step(
                self.flat, self._grads, mem, inputs, targets, h, work, self.H, self.V, code,
                opt.lr, opt.eps, opt.clip, mem2, opt.beta1, opt.beta2, opt.steps + 1,
                opt.clip_norm, grad_scale, self._undo, threads=threads)
            if taken:
                opt.steps += 1
        finally:
            self.lock.release()
        return loss, taken

    @serialised
    def generate(self, n, h, uniforms, temperature, greedy, top_k=0, top_p=1.0):
        out = np.empty(n, dtype=np.int32)
        if not self.spec.legacy:
            if self._sample_work is None:
                self._sample_work = aligned_empty(_kernels.stack_sample_work_size(
                    self.H, self.V, self.L, CELL_CODES[self.spec.cell]), self.dtype)
            _kernels.stack_sample(self.flat, *self._stack, h[0], _c(h),
                                  np.ascontiguousarray(uniforms, dtype=np.float64), temperature,
                                  greedy, out, self._sample_work, top_k, top_p,
                                  threads=sample_threads(self.spec, self.flat.itemsize))
            return out
        if self._sample_work is None:  # kept: stream() calls this for every chunk
            self._sample_work = aligned_empty(_kernels.sample_work_size(self.H, self.V),
                                              self.dtype)
        _kernels.sample(self.flat, h, uniforms, temperature, greedy, out, self._sample_work,
                        self.H, self.V, top_k, top_p)
        return out

    @serialised
    def beam_search(self, n, h, beam):
        """The compiled beam search (src/fastrnn/_beam.pxi): the numpy backend's algorithm on
        the stack sampler's step arithmetic, for every model."""
        if self.spec.legacy:
            h_rows, c_rows = np.ascontiguousarray(h, dtype=self.dtype).reshape(1, -1), None
            model = (None, 0, 0, self.H, self.V, 1)
        else:
            h_rows = np.ascontiguousarray(h[0], dtype=self.dtype)
            c_rows = np.ascontiguousarray(h[1], dtype=self.dtype) if len(h) == 2 else None
            model = self._stack
        return _kernels.beam_search(self.flat, *model, h_rows, c_rows, n, beam,
                                    legacy=self.spec.legacy)

    def _undo_buffer(self, code):
        """The guarded step's buffer for the old values it overwrites, grown on demand."""
        size = _kernels.undo_size(self.flat.shape[0], code)
        if self._undo is None or self._undo.shape[0] < size:
            self._undo = aligned_empty(size, self.dtype, at=self.anchor)
        return self._undo

    # -- stacked models, and every model in bf16: the stack kernels (src/fastrnn/_stack*.pxi) ---
    @property
    def _mode(self):
        """The stack kernels' precision keyword (none in fp32: kernels built before the bf16
        mode take no such keyword)."""
        return {"bf16": True} if self._bf16 else {}

    def _states_of(self, h):
        """The state as the stack kernels take it: a tuple of (L,B,H) views; min-char-rnn's
        (B,H) array (in bf16 mode) is viewed as (1,B,H)."""
        return (h.reshape(1, -1, self.H),) if isinstance(h, np.ndarray) else h

    @property
    def _stack(self):
        """The model arguments every stack kernel takes after the parameters."""
        s = self.spec
        return (self._offsets, CELL_CODES[s.cell], int(s.nonlinearity == "relu"), self.H,
                self.V, self.L)

    def _stack_chunk_args(self, inputs):
        """work and threads for a chunk of a stacked model (see _chunk_args)."""
        threads = get_num_threads()
        B, T = inputs.shape
        key = ("stack", B, T, threads, self._bf16)
        work = self._work.get(key)
        if work is None:
            if len(self._work) > 8:
                self._work.clear()
            work = aligned_empty(_kernels.stack_work_size(B, T, self.H, self.V, self.L,
                                                          CELL_CODES[self.spec.cell], threads,
                                                          **self._mode),
                                 self.dtype)
            self._work[key] = work
        return work, threads

    def _masks(self, masks):
        """Dropout masks as the kernels take them: C-contiguous, of the model dtype."""
        return None if masks is None else np.ascontiguousarray(masks, dtype=self.dtype)

    def _stack_loss_and_grads(self, inputs, targets, h, want_dh0, masks):
        masks = self._masks(masks)
        grads = self.zeros()
        st = self._states_of(h)
        dstate = tuple(np.empty_like(a) for a in st) if want_dh0 else None
        work, threads = self._stack_chunk_args(inputs)
        loss = _kernels.stack_loss_and_grads(
            self.flat, grads, *self._stack, inputs, targets, st[0], _c(st), masks,
            dstate[0] if dstate else None, _c(dstate), work, threads=threads, **self._mode)
        if dstate is not None and isinstance(h, np.ndarray):
            dstate = dstate[0].reshape(h.shape)
        return loss, grads, dstate

    @serialised
    def _stack_train_step(self, inputs, targets, h, opt, grad_scale, masks, code, guarded):
        masks = self._masks(masks)
        if self._grads is None:
            self._grads = self.zeros()
        mem, mem2 = self._states(opt)
        st = self._states_of(h)
        work, threads = self._stack_chunk_args(inputs)
        out = _kernels.stack_train_step(
            self.flat, self._grads, mem, *self._stack, inputs, targets, st[0], _c(st), masks,
            work, threads, code, opt.lr, opt.eps, opt.clip, mem2, opt.beta1, opt.beta2,
            opt.steps + 1, opt.clip_norm, grad_scale,
            self._undo_buffer(code) if guarded else None, **self._mode)
        if not guarded or out[1]:
            opt.steps += 1
        return out


def _c(state):
    """An lstm state's c (None for one-array states and for None)."""
    return state[1] if state is not None and len(state) == 2 else None

