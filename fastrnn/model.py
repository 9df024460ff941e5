"""CharRNN: the public model object. It validates every input, then hands plain arrays to its
backend (see fastrnn.backends), which holds the parameters and does the math."""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator, Mapping
from typing import Any, Tuple, Union

import numpy as np

from ._layout import ModelSpec
from ._params import check_dtype, check_precision, check_tensors
from .backends import get_backend
from .vocab import Vocab

ArrayLike = Any  # numpy.typing.ArrayLike, without importing numpy.typing at run time
State = Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]  # h, or (h, c) for an lstm


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_ids(a, vocab_size, name, ndims=(1, 2)):
    """An integer id array as a new C-contiguous int32 array, after checking dtype, rank, size
    and range. The checks are made on a copy, which is what is returned: another thread that
    writes the caller's array meanwhile cannot change an id between its check and its use."""
    a = np.array(a, order="C")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an array of integer ids, got dtype {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(f'{d}' for d in ndims)} dimension(s), "
                         f"got shape {a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} holds ids in [{lo}, {hi}]; ids must lie in [0, {vocab_size}) "
                         f"for vocab_size={vocab_size}")
    return a.astype(np.int32, copy=False)


# stream()'s chunks when chunk_size is None: the first small, so that characters come at once,
# then each twice the last up to the largest, because each call of the sampler first lays out
# the weights for its loop (at H=512 as long as some 50 characters take)
STREAM_FIRST_CHUNK, STREAM_LARGEST_CHUNK = 16, 1024

INITS = ("gist", "uniform", "orthogonal", "identity")  # weight initialisations (see CharRNN)


def init_params(spec, init, rng, forget_bias=0.0):
    """Initial tensors of a model, drawn from rng in layout order (see CharRNN)."""
    H = spec.hidden_size
    bound = 1 / np.sqrt(H)
    if spec.legacy and init in ("gist", "uniform"):  # min-char-rnn's draws: Wxh, Whh, Why
        return {name: (np.zeros(shape) if not name.startswith("W")
                       else rng.standard_normal(shape) * 0.01 if init == "gist"
                       else rng.uniform(-bound, bound, shape))
                for name, shape in spec.shapes().items()}
    recurrent = {spec.layer_names(k)[1] for k in range(spec.num_layers)}
    out = {}
    for name, shape in spec.shapes().items():
        if init == "gist":
            out[name] = (rng.standard_normal(shape) * 0.01 if len(shape) == 2
                         else np.zeros(shape))
        else:
            out[name] = rng.uniform(-bound, bound, shape)
        if name in recurrent and init == "orthogonal":  # each gate's (H,H) block
            blocks = []
            for _ in range(spec.gates):
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                blocks.append(q * np.sign(np.diag(r)))
            out[name] = np.concatenate(blocks, axis=0)
        elif name in recurrent and init == "identity":
            out[name] = np.eye(H)
    if spec.cell == "lstm" and forget_bias:
        for k in range(spec.num_layers):
            _, _, b_ih, b_hh = spec.layer_names(k)
            out[b_ih][H:2 * H] = forget_bias  # the forget gate's bias, split as b_ih + b_hh
            out[b_hh][H:2 * H] = 0.0
    return out


class CharRNN:
    """A character-level recurrent language model: stacked rnn (Elman, tanh or relu), lstm or
    gru layers and a linear head, PyTorch's equations and names (see fastrnn.backends.
    numpy_backend for the math).

    min-char-rnn's model (cell="rnn", one tanh layer) has the parameters Wxh (H,V), Whh (H,H),
    Why (V,H), bh (H,), by (V,); h_t = tanh(Wxh[:, x_t] + Whh h_{t-1} + bh), p_t = softmax(Why
    h_t + by), and its state is an (H,) or (B,H) array. Every other model has per layer k
    weight_ih_l{k} (G*H, V or H), weight_hh_l{k} (G*H, H), bias_ih_l{k}, bias_hh_l{k} (G*H,)
    (G = 1, 4, 3 for rnn, lstm, gru) and the head Why, by; its state is an (L,H) or (L,B,H)
    array, or for lstm a tuple (h, c) of two. The loss is the summed cross-entropy in nats.

    dropout=p multiplies each layer's output but the last, while training, by a mask of 0 and
    1/(1-p) (PyTorch's nn.LSTM(dropout=p)); the Trainer draws the masks.

    init: weights drawn from numpy.random.default_rng(seed), in layout order:
      "gist"        N(0, 1) * 0.01 and zero biases, as min-char-rnn (its model's default)
      "uniform"     U(-1/sqrt(H), 1/sqrt(H)), PyTorch's default (every other model's default;
                    min-char-rnn's model then keeps zero biases)
      "orthogonal"  as uniform, with each gate's (H,H) block of the recurrent matrices orthogonal
      "identity"    as uniform, with the recurrent matrix the identity (cell="rnn": IRNN, Le et
                    al. 2015, with nonlinearity="relu")
    forget_bias: the LSTM forget gates' bias (char-rnn sets 1).

    precision: "fp32" (the default), or "bf16" (float32 models only): the matrix products of
    training and evaluation (loss, loss_and_grads, nll, score; the recurrence, the input
    projections of layers after the first, the head, and BPTT's weight gradients and
    dL/dh) take bfloat16 operands, rounded to nearest even, and sum in float32. The master
    parameters, optimizer state, cells' pointwise math, softmax and loss stay float32, and
    layer 0's input (a column of W_ih per one-hot id) stays exact. generate, stream,
    beam_search and fastrnn.inspect run float32 products in either precision. On backend
    "torch" bf16 is torch.autocast(dtype=torch.bfloat16) around the forward pass.

    `vocab_size` may also be a Vocab, which is then kept as `model.vocab`.

    Threads: calls on one model are serialised. Each call into its backend holds a lock of the
    model's own for its whole duration (the compiled kernels release the GIL, and reuse scratch
    buffers of the model's); generate() and nll() hold it from start to end, so a training step
    in another thread lands before or after them. stream() takes it for each chunk. Different
    models run in parallel. Id, state and parameter arrays are copied and checked before use,
    so a thread writing them meanwhile cannot crash a call or make it use unchecked ids.
    `copy.deepcopy(model)` gives an independent model (its own lock and buffers).
    """

    def __init__(self, vocab_size: int | Vocab, hidden_size: int = 100, *, cell: str = "rnn",
                 num_layers: int = 1, dropout: float = 0.0, nonlinearity: str = "tanh",
                 backend: str = "cython", dtype: str | np.dtype = "float32", seed: int = 0,
                 device: str = "cpu", vocab: Vocab | None = None, init: str | None = None,
                 forget_bias: float = 0.0, precision: str = "fp32") -> None:
        if isinstance(vocab_size, Vocab):
            vocab, vocab_size = vocab_size, len(vocab_size)
        V = check_positive_int(vocab_size, "vocab_size")
        H = check_positive_int(hidden_size, "hidden_size")
        if vocab is not None and len(vocab) != V:
            raise ValueError(f"vocab has {len(vocab)} characters but vocab_size={V}")
        spec = ModelSpec(cell, V, H, num_layers, nonlinearity, dropout)
        if init is None:
            init = "gist" if spec.legacy else "uniform"
        if not isinstance(init, str) or init not in INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {init!r}")
        if init == "identity" and cell != "rnn":
            raise ValueError(f"init='identity' is for cell='rnn' (IRNN), not {cell!r}")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, numbers.Real) or \
                not math.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias!r}")
        if forget_bias and cell != "lstm":
            raise ValueError("forget_bias is for cell='lstm'")
        dtype = check_dtype(dtype)
        precision = check_precision(precision, dtype)
        self.vocab = vocab
        self._backend = get_backend(backend)(spec, dtype, device, precision=precision)
        self.set_params(init_params(spec, init, np.random.default_rng(seed), forget_bias))

    @property
    def spec(self) -> ModelSpec:
        """The model's description (fastrnn._layout.ModelSpec)."""
        return self._backend.spec

    @property
    def vocab_size(self) -> int:
        return self._backend.V

    @property
    def hidden_size(self) -> int:
        return self._backend.H

    @property
    def cell(self) -> str:
        return self.spec.cell

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def dropout(self) -> float:
        return self.spec.dropout

    @property
    def nonlinearity(self) -> str:
        return self.spec.nonlinearity

    @property
    def dtype(self) -> np.dtype:
        return self._backend.dtype

    @property
    def precision(self) -> str:
        """"fp32" or "bf16": the operands of the training and evaluation products (see
        CharRNN)."""
        return self._backend.precision

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    def __repr__(self):
        extra = ""
        if not self.spec.legacy:
            extra = (f", cell={self.cell!r}, num_layers={self.num_layers}"
                     + (f", nonlinearity={self.nonlinearity!r}" if self.cell == "rnn" else "")
                     + (f", dropout={self.dropout}" if self.dropout else ""))
        precision = "" if self.precision == "fp32" else f", precision={self.precision!r}"
        return (f"CharRNN(vocab_size={self.vocab_size}, hidden_size={self.hidden_size}{extra}, "
                f"backend={self.backend!r}, dtype={self.dtype.name!r}, device={self.device!r}"
                f"{precision})")

    # -- parameters ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, np.ndarray]:
        """Copies of the named tensors (see the class docstring) as numpy arrays."""
        return self._backend.get_params()

    def set_params(self, params: Mapping[str, ArrayLike]) -> None:
        """Sets every tensor from a dict of arrays (names and shapes checked, cast to the model
        dtype)."""
        params = check_tensors(params, self.spec)
        cast = {}
        for name, a in params.items():
            with np.errstate(over="ignore"):
                cast[name] = np.array(a, dtype=self.dtype)  # a copy: checked is what is set
            if not np.all(np.isfinite(cast[name])):  # after the cast: 1e300 is inf in float32
                raise ValueError(f"params[{name!r}] holds NaN or infinite values (as "
                                 f"{self.dtype.name})")
        self._backend.set_params(cast)

    # -- state ---------------------------------------------------------------------------------
    def zero_state(self, batch_size: int | None = None) -> State:
        """The zero state: for min-char-rnn's model an (H,) array ((B,H) with batch_size), else
        an (L,H) ((L,B,H)) array, or a tuple (h, c) of two for lstm."""
        return self._initial_state(None, 1 if batch_size is None else batch_size,
                                   batch_size is None, as_given=True)

    def _state_array(self, a, want, name):
        a = np.array(a)  # checked and cast as a copy: the caller's array may change meanwhile
        if a.shape != want:
            raise ValueError(f"{name} has shape {a.shape}; expected {want}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
        with np.errstate(over="ignore"):
            a = np.ascontiguousarray(a, dtype=self.dtype)
        if not np.all(np.isfinite(a)):  # checked after the cast: 1e300 is inf in float32
            raise ValueError(f"{name} holds NaN or infinite values (as {self.dtype.name})")
        return a

    def _initial_state(self, h0, batch, squeeze, as_given=False):
        """The state for a chunk of `batch` rows as the backends take it: a fresh C-contiguous
        (B,H) array for min-char-rnn's model, else a tuple of (L,B,H) arrays. With as_given, in
        the user's shape instead ((H,)/(L,H) when squeeze)."""
        H, L, spec = self.hidden_size, self.num_layers, self.spec
        if spec.legacy:
            want = (H,) if squeeze else (batch, H)
            h = (np.zeros(want, dtype=self.dtype) if h0 is None
                 else self._state_array(h0, want, "h0"))
            return h if as_given else h.reshape(batch, H)
        want = (L, H) if squeeze else (L, batch, H)
        names = ("h0", "c0")[:spec.state_count]
        if h0 is None:
            parts = [np.zeros(want, dtype=self.dtype) for _ in names]
        elif spec.cell == "lstm":
            if not isinstance(h0, tuple) or len(h0) != 2:
                raise TypeError(f"an lstm's state is a tuple (h, c) of two {want} arrays, got "
                                f"{type(h0).__name__}")
            parts = [self._state_array(a, want, n) for a, n in zip(h0, names)]
        else:
            if isinstance(h0, tuple):
                raise TypeError(f"a {spec.cell}'s state is one {want} array, not a tuple")
            parts = [self._state_array(h0, want, "h0")]
        if as_given:
            return tuple(parts) if spec.cell == "lstm" else parts[0]
        return tuple(a.reshape(L, batch, H) for a in parts)

    def _user_state(self, state, squeeze):
        """A backend state in the user's form (see _initial_state)."""
        if isinstance(state, np.ndarray):
            return state[0] if squeeze else state
        parts = tuple(a[:, 0] if squeeze else a for a in state)
        return parts if self.cell == "lstm" else parts[0]

    def _row(self, state, b):
        """Row b of a backend state, as a backend state of one row (copies)."""
        if isinstance(state, np.ndarray):
            return state[b:b + 1].copy()
        return tuple(np.ascontiguousarray(a[:, b:b + 1]) for a in state)

    # -- math ----------------------------------------------------------------------------------
    def _chunk(self, inputs, targets, h0):
        x = as_ids(inputs, self.vocab_size, "inputs")
        squeeze = x.ndim == 1
        x = x.reshape(-1, x.shape[-1])
        y = None
        if targets is not None:
            y = as_ids(targets, self.vocab_size, "targets")
            if y.size != x.size or y.ndim != (1 if squeeze else 2):
                raise ValueError(f"targets shape {np.shape(targets)} does not match inputs shape "
                                 f"{np.shape(inputs)}")
            y = y.reshape(x.shape)
        return x, y, self._initial_state(h0, x.shape[0], squeeze), squeeze

    def loss_and_grads(self, inputs: ArrayLike, targets: ArrayLike, h0: State | None = None, *,
                       return_dh0: bool = False) -> tuple:
        """Loss, gradients and last state of one chunk (no dropout: see Trainer).

        inputs/targets: int arrays (T,) or (B,T); h0: None (zeros) or a state (see
        zero_state) for one sequence or B of them.
        Returns (loss, grads, state): loss summed over all B*T tokens (a float); grads a dict
        like get_params() (unclipped; with return_dh0 also "h0", the gradient wrt the initial
        state, shaped like it); state the last one, shaped like h0.
        """
        if targets is None:
            raise ValueError("targets is required")
        x, y, h, squeeze = self._chunk(inputs, targets, h0)
        loss, flat, dh0 = self._backend.loss_and_grads(x, y, h, want_dh0=return_dh0)
        grads = self._backend.to_dict(flat)
        if return_dh0:
            grads["h0"] = self._user_state(dh0 if not isinstance(dh0, np.ndarray)
                                           else np.asarray(dh0), squeeze)
        return float(loss), grads, self._user_state(h, squeeze)

    def loss(self, inputs: ArrayLike, targets: ArrayLike, h0: State | None = None) -> float:
        """(summed loss, last state) of a chunk, without gradients."""
        x, y, h, squeeze = self._chunk(inputs, targets, h0)
        if y is None:
            raise ValueError("targets is required")
        loss = self._backend.forward_loss(x, y, h)
        return float(loss), self._user_state(h, squeeze)

    def _sampling_args(self, temperature, greedy, top_k, top_p):
        """Checked (temperature, greedy, top_k, top_p); greedy when temperature is 0."""
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) \
                or not (0 <= temperature < math.inf):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        top_k = 0 if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer (0 or None: off), "
                             f"got {top_k!r}")
        top_p = 1.0 if top_p is None else top_p
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1] (1 or None: off), got {top_p!r}")
        with np.errstate(over="ignore", under="ignore"):
            t = self.dtype.type(temperature)
        if not np.isfinite(t):
            raise ValueError(f"temperature={temperature!r} overflows {self.dtype.name}")
        # a temperature that rounds to 0 in the model's dtype is the greedy limit
        return float(temperature), bool(greedy) or t == 0, int(top_k), float(top_p)

    def _primed_state(self, prime_ids, h0):
        h = self._initial_state(h0, 1, True)
        if prime_ids is not None and np.size(prime_ids) > 0:
            prime = as_ids(prime_ids, self.vocab_size, "prime_ids", ndims=(1,))
            self._backend.prime(prime[None, :], h)  # generation's float32 products
        return h

    def generate(self, n: int, *, prime_ids: ArrayLike | None = None, h0: State | None = None,
                 temperature: float = 1.0, greedy: bool = False, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None,
                 beam: int | None = None) -> np.ndarray:
        """n sampled ids (int32 array); with beam=K, the ids beam_search(n, K) finds instead.

        The state starts at h0 (zeros by default) and is first run over `prime_ids`, if given.
        Each id is then the argmax of the logits (greedy, or temperature 0), or drawn from
        softmax(logits / temperature) restricted to the top_k most likely ids (None or 0: all,
        as `fastrnn sample --top-k 0`), then to the smallest set of the most likely whose
        probability reaches top_p (nucleus; None: all), renormalised; top_k=1 is the greedy
        path. Draws use the inverse CDF over ids in order, on uniforms from
        numpy.random.default_rng(seed): same seed, same ids, on every CPU backend.
        """
        if beam is not None:
            if greedy or temperature != 1.0 or top_k is not None or top_p is not None:
                raise ValueError("beam search takes the model's own distribution: it does not "
                                 "combine with greedy, temperature, top_k or top_p")
            return self.beam_search(n, beam, prime_ids=prime_ids, h0=h0)[0]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        temperature, greedy, top_k, top_p = self._sampling_args(temperature, greedy, top_k, top_p)
        uniforms = (np.empty(0) if greedy else np.random.default_rng(seed).random(int(n)))
        with self._backend.lock:  # the priming and the draws with the same parameters
            h = self._primed_state(prime_ids, h0)
            return self._backend.generate(int(n), self._one(h), uniforms, temperature, greedy,
                                          top_k, top_p)

    def beam_search(self, n, beam, *, prime_ids=None, h0=None):
        """(ids, score): the n ids (int32 array) that beam search of width `beam` finds from the
        state h0 (zeros by default) run over prime_ids, and their score, the mean log-probability
        per id in nats (the length-normalised log-probability; every hypothesis holds n ids, so
        it ranks them as their total does).

        Each step extends each of the (at most) `beam` hypotheses kept by every id, and keeps
        the `beam` best by total log-probability (computed in float64), ties to the earlier
        hypothesis, then the lower id; beam=1 is the greedy path. A beam can drop the greedy
        path's prefix for ones that later fall below it, so the greedy path is searched too and
        returned when it scores higher: the result is never less likely than greedy's.
        Deterministic: the same ids on every backend (up to float rounding where two
        candidates are within it)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        if isinstance(beam, bool) or not isinstance(beam, numbers.Integral) or beam < 1:
            raise ValueError(f"beam must be a positive integer (the number of hypotheses "
                             f"kept), got {beam!r}")
        with self._backend.lock:
            h = self._one(self._primed_state(prime_ids, h0))
            found = self._backend.beam_search(int(n), h, int(beam))
            if beam == 1:
                return found
            # a beam can prune the greedy path's prefix and end below it: the greedy path (a
            # beam of 1, scored the same way) is the floor
            greedy = self._backend.beam_search(int(n), h, 1)
            return greedy if greedy[1] > found[1] else found

    @staticmethod
    def _one(state):
        """A backend state of one row as generate takes it: (H,) or a tuple of (L,H) views."""
        if isinstance(state, np.ndarray):
            return state[0]
        return tuple(a[:, 0] for a in state)

    def stream(self, n: int | None = None, *, prime: str = "", prime_ids: ArrayLike | None = None,
               h0: State | None = None, temperature: float = 1.0, greedy: bool = False,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               chunk_size: int | None = None, oov: str = "error") -> Iterator[str | int]:
        """An iterator over generated characters (ids when the model has no vocab), produced
        chunk_size at a time (None: 16 first, then each chunk twice the last, up to 1024): n of
        them, or without end when n is None. For the same arguments it yields exactly what
        generate() / sample_text() return. `prime` is text to warm the state on (needs
        model.vocab; characters outside it raise, or are dropped or replaced as
        oov="skip"/"replace" says, see Vocab.encode); `prime_ids` the same as ids."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral)
                              or n < 0):
            raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
        if chunk_size is not None:
            chunk_size = check_positive_int(chunk_size, "chunk_size")
        temperature, greedy, top_k, top_p = self._sampling_args(temperature, greedy, top_k, top_p)
        if prime:
            if self.vocab is None:
                raise ValueError("prime text needs a model with a vocab; pass prime_ids")
            prime_ids = self.vocab.encode(prime, oov=oov)
        return self._stream(n, self._one(self._primed_state(prime_ids, h0)), temperature,
                            greedy, top_k, top_p, np.random.default_rng(seed), chunk_size)

    def _stream(self, n, h, temperature, greedy, top_k, top_p, rng, chunk_size):
        done = 0
        size = STREAM_FIRST_CHUNK if chunk_size is None else chunk_size
        while n is None or done < n:
            k = size if n is None else min(size, n - done)
            uniforms = np.empty(0) if greedy else rng.random(k)  # PCG64 draws chunk by chunk
            ids = self._backend.generate(k, h, uniforms, temperature, greedy, top_k, top_p)
            done += k
            if chunk_size is None:
                size = min(2 * size, STREAM_LARGEST_CHUNK)
            if self.vocab is None:
                yield from ids.tolist()
            else:
                yield from self.vocab.decode(ids)

    def nll(self, ids: ArrayLike, *, batch_size: int = 1,
            chunk_length: int = 256) -> tuple[float, int]:
        """(total negative log-likelihood in nats, number of predictions) of an id sequence:
        each id after the first predicted from all before it, starting from the zero state.

        batch_size=B > 1 runs B contiguous streams side by side, each from a zero state (faster;
        the first ids of each stream see less context); what remains of len(ids)-1 predictions
        after B equal streams is scored by continuing the last one, so all are counted.
        """
        ids = as_ids(ids, self.vocab_size, "ids", ndims=(1,))
        B = check_positive_int(batch_size, "batch_size")
        T = check_positive_int(chunk_length, "chunk_length")
        n_pairs = len(ids) - 1
        if n_pairs < 1:
            raise ValueError("scoring needs at least 2 ids (one prediction)")
        B = min(B, n_pairs)
        L = n_pairs // B
        streams = ids[:B * L + 1]
        total, h = 0.0, self._initial_state(None, B, False)
        with self._backend.lock:  # every chunk scored with the same parameters
            for p in range(0, L, T):
                t = min(T, L - p)
                x = np.stack([streams[b * L + p:b * L + p + t] for b in range(B)])
                y = np.stack([streams[b * L + p + 1:b * L + p + t + 1] for b in range(B)])
                total += self._backend.forward_loss(x, y, h)
            h_last = self._row(h, B - 1)
            for p in range(B * L, n_pairs, T):  # the remainder, after the last stream
                t = min(T, n_pairs - p)
                total += self._backend.forward_loss(ids[None, p:p + t],
                                                    ids[None, p + 1:p + t + 1], h_last)
        return float(total), n_pairs

    def score(self, text: str | ArrayLike, **kwargs: Any) -> float:
        """Bits per character of `text` (a str, needs model.vocab, or an id sequence): the mean
        of -log2 p(each character | all before it) over all but the first; kwargs as nll()."""
        if isinstance(text, str):
            if self.vocab is None:
                raise ValueError("scoring text needs a model with a vocab; pass ids")
            text = self.vocab.encode(text)
        total, count = self.nll(text, **kwargs)
        return total / count / math.log(2)

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Writes parameters, vocabulary, sizes and dtype to an .npz file (atomically, no
        pickles); `CharRNN.load` reads it back on any backend or device."""
        from .checkpoint import model_arrays, write_npz_atomic
        write_npz_atomic(path, model_arrays(self))

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "cython", device: str = "cpu",
             dtype: str | np.dtype | None = None, precision: str | None = None) -> CharRNN:
        """A model from a file written by `save`, on any backend and device whatever it was saved
        from (a CUDA-saved file loads on the CPU); dtype and precision: the saved ones unless
        given (files from before precision existed are "fp32")."""
        from .checkpoint import model_from_arrays, read_npz
        return model_from_arrays(read_npz(path), path, backend=backend, device=device,
                                 dtype=dtype, precision=precision)

    # -- PyTorch interop (needs torch) ----------------------------------------------------------
    def to_torch(self, device: Any = None) -> Any:
        """This model as a torch.nn.Module: `rnn` (torch.nn.RNN(V, H, nonlinearity=...),
        nn.LSTM or nn.GRU, num_layers=L, dropout=p, batch_first) and `head` (torch.nn.Linear(H,
        V)); `module(ids (B,T), h0)` gives the logits (B,T,V), h0 in PyTorch's convention.
        Copies of the parameters, in the model dtype, on `device` (default: the model's), in
        eval mode. min-char-rnn's model exports bh as bias_ih_l0 and zeros as bias_hh_l0."""
        from .interop import to_torch
        return to_torch(self, device)

    @classmethod
    def from_torch(cls, module_or_state_dict: Any, *, backend: str = "cython",
                   device: str = "cpu", dtype: str | np.dtype | None = None,
                   vocab: Vocab | None = None, nonlinearity: str | None = None,
                   dropout: float | None = None) -> CharRNN:
        """A model from a module with `rnn` (nn.RNN, nn.LSTM or nn.GRU, one-directional) and
        `head` (nn.Linear), as made by to_torch, a pair (rnn module, nn.Linear), or the state
        dict of either. The cell, layers, nonlinearity and dropout are the module's; a state
        dict's cell is read from its gate blocks, and its nonlinearity (rnn) and dropout are
        the arguments' (default "tanh" and 0). A one-layer tanh RNN becomes min-char-rnn's
        model (its two biases summed into bh). dtype: the source's (float32 unless float64)
        unless given; vocab: the module's `vocab` attribute unless given."""
        from .interop import params_from_torch
        spec, params, source_dtype, source_vocab = params_from_torch(
            module_or_state_dict, nonlinearity=nonlinearity, dropout=dropout)
        vocab = source_vocab if vocab is None else vocab
        if vocab is not None and len(vocab) != spec.vocab_size:
            raise ValueError(f"vocab has {len(vocab)} characters but the module's input size "
                             f"is {spec.vocab_size}")
        model = cls(spec.vocab_size if vocab is None else vocab, spec.hidden_size,
                    cell=spec.cell, num_layers=spec.num_layers, dropout=spec.dropout,
                    nonlinearity=spec.nonlinearity, backend=backend, device=device,
                    dtype=dtype or source_dtype)
        model.set_params(params)
        return model

    def sample_text(self, n: int, *, prime: str = "", oov: str = "error", **kwargs: Any) -> str:
        """n generated characters as a str (needs model.vocab); prime is text to warm up on
        (characters outside the vocabulary as `oov` says, see Vocab.encode)."""
        if self.vocab is None:
            raise ValueError("this model has no vocab; build it with CharRNN(vocab, ...) or "
                             "decode generate()'s ids with your Vocab")
        prime_ids = self.vocab.encode(prime, oov=oov) if prime else None
        return self.vocab.decode(self.generate(n, prime_ids=prime_ids, **kwargs))
