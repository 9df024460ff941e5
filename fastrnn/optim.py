"""Optimizers. Each holds its hyperparameters, a count of the steps taken and flat state buffers
shaped like the model's parameters; the model's backend applies the update (fused with clipping
in compiled code on `cython`, the same math in numpy on `numpy`).

Every update first rescales the gradient g (the loss's, summed over tokens unless the trainer
says otherwise) so that its global L2 norm is at most `clip_norm` (as
torch.nn.utils.clip_grad_norm_: g *= clip_norm / (norm + 1e-6) when that is < 1), then clips each
element to [-clip, clip]; either is off when None. Then, elementwise:

    Adagrad  mem += g*g;                     p -= lr * g / sqrt(mem + eps)
    SGD                                      p -= lr * g
    RMSprop  ms = decay*ms + (1-decay)*g*g;  p -= lr * g / (sqrt(ms) + eps)        (char-rnn's)
    Adam     m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
             p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)          (t = steps taken)
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def _check_positive(value, name, allow_inf=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            value > 0 and (allow_inf or value < math.inf)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 <= value < 1):
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class: clipping settings, the step count and the state buffers."""

    name = None
    state_names = ()      # the flat buffers this optimizer keeps, in the kernels' order
    hyper_names = ("lr", "eps")

    def __init__(self, model, lr, eps, clip, clip_norm):
        self.model = model
        self.lr = _check_positive(lr, "lr")
        self.eps = _check_positive(eps, "eps")
        self.clip = None if clip is None else _check_positive(clip, "clip", allow_inf=True)
        self.clip_norm = (None if clip_norm is None
                          else _check_positive(clip_norm, "clip_norm", allow_inf=True))
        self.steps = 0
        self.state = {name: model._backend.zeros() for name in self.state_names}

    @property
    def beta1(self):  # the kernels' first decay constant (Adam only)
        return 0.9

    @property
    def beta2(self):  # the kernels' second decay constant (Adam's b2, RMSprop's decay)
        return 0.999

    def hyperparameters(self):
        """Everything that defines this optimizer, as a dict of plain numbers (None: off)."""
        return {k: getattr(self, k) for k in self.hyper_names + ("clip", "clip_norm")}

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    def step(self, grads, grad_scale=1.0):
        """Updates the model's parameters in place from a dict of gradients (left unchanged),
        first multiplied by grad_scale (e.g. 1/tokens to turn a summed loss into a mean)."""
        from ._params import check_tensors
        m = self.model
        grads = check_tensors(grads, m.spec, what="grads")
        m._backend.update(self, m._backend.to_flat(grads), _check_positive(grad_scale,
                                                                           "grad_scale"))

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """The state buffers (copies, as numpy arrays) and the step count."""
        out = {name: np.array(self.model._backend.to_numpy(buf))
               for name, buf in self.state.items()}
        out["steps"] = self.steps
        return out

    def load_state_dict(self, state):
        """Restores what state_dict returned (the buffers must match the model's size)."""
        for name in self.state_names:
            if name not in state:
                raise ValueError(f"optimizer state lacks {name!r} for {self.name}")
            a = np.asarray(state[name])
            if a.shape != self.state[name].shape:
                raise ValueError(f"optimizer state {name!r} has shape {a.shape}; expected "
                                 f"{self.state[name].shape}")
            self.model._backend.copy_into(self.state[name], a)
        steps = int(state["steps"])
        if steps < 0:
            raise ValueError(f"optimizer steps must be >= 0, got {steps}")
        self.steps = steps


class Adagrad(Optimizer):
    """Adagrad as in min-char-rnn: clip each element to [-clip, clip], then mem += g*g and
    p -= lr * g / sqrt(mem + eps)."""

    name = "adagrad"
    state_names = ("mem",)

    def __init__(self, model, lr=0.1, eps=1e-8, clip=5.0, clip_norm=None):
        super().__init__(model, lr, eps, clip, clip_norm)


class SGD(Optimizer):
    """Plain stochastic gradient descent: p -= lr * g (after clipping)."""

    name = "sgd"
    hyper_names = ("lr",)

    def __init__(self, model, lr=0.01, clip=5.0, clip_norm=None):
        super().__init__(model, lr, 1e-8, clip, clip_norm)


class RMSprop(Optimizer):
    """RMSprop as char-rnn runs it (torch7 optim.rmsprop): ms = decay*ms + (1-decay)*g*g,
    p -= lr * g / (sqrt(ms) + eps); char-rnn's defaults lr 2e-3, decay 0.95, clip 5."""

    name = "rmsprop"
    state_names = ("mean_square",)
    hyper_names = ("lr", "eps", "decay")

    def __init__(self, model, lr=2e-3, decay=0.95, eps=1e-8, clip=5.0, clip_norm=None):
        self.decay = _check_fraction(decay, "decay")
        super().__init__(model, lr, eps, clip, clip_norm)

    @property
    def beta2(self):
        return self.decay


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; by default the global gradient norm is clipped
    to 5, as PyTorch char-RNN labs do."""

    name = "adam"
    state_names = ("m", "v")
    hyper_names = ("lr", "eps", "betas")

    def __init__(self, model, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, clip=None, clip_norm=5.0):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_fraction(betas[0], "beta1"), _check_fraction(betas[1], "beta2"))
        super().__init__(model, lr, eps, clip, clip_norm)

    @property
    def beta1(self):
        return self.betas[0]

    @property
    def beta2(self):
        return self.betas[1]


OPTIMIZERS = {cls.name: cls for cls in (Adagrad, SGD, RMSprop, Adam)}


def make_optimizer(name: str, model: Any, **kwargs: Any) -> Optimizer:
    """An optimizer by name ('adagrad', 'sgd', 'rmsprop', 'adam'), with its defaults for every
    hyperparameter not given."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](model, **kwargs)


class LinearDecay:
    """A learning-rate schedule for Trainer(lr_schedule=...): the optimizer's lr as given (the
    base) for the updates up to iteration `start`, then lowered linearly so that the update that
    completes iteration `end` uses `to` times the base, and held there after.

    factor(i) is the multiplier of the update that makes iteration i + 1. bench/quality.py
    trains the lab setting best with Adam's lr held for half the run, then lowered to ~0.
    """

    def __init__(self, start, end, to=0.01):
        for name, v in (("start", start), ("end", end)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise ValueError(f"LinearDecay {name} must be an integer >= 0, got {v!r}")
        if end <= start:
            raise ValueError(f"LinearDecay needs end > start, got start={start}, end={end}")
        if not (isinstance(to, numbers.Real) and 0 < to <= 1):
            raise ValueError(f"LinearDecay to must lie in (0, 1] (a zero learning rate is "
                             f"refused by the optimizers), got {to!r}")
        self.start, self.end, self.to = int(start), int(end), float(to)

    def factor(self, iteration):
        done = min(max(iteration + 1 - self.start, 0), self.end - self.start)
        return 1.0 - (1.0 - self.to) * done / (self.end - self.start)

    def state_dict(self):
        return {"start": self.start, "end": self.end, "to": self.to}

    def __repr__(self):
        return f"LinearDecay(start={self.start}, end={self.end}, to={self.to})"


class StepDecay:
    """A learning-rate schedule for Trainer(lr_schedule=...), char-rnn's and torch-rnn's: the
    lr multiplied by `factor` after every `every` iterations (torch-rnn's -lr_decay_every is in
    epochs; `fastrnn train --lr-decay-every E` passes E times the iterations of an epoch).

    factor(i), the multiplier of the update that makes iteration i + 1, is factor ** (i // every):
    the first `every` updates use the base lr.
    """

    def __init__(self, every, factor):
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"StepDecay every must be an integer >= 1, got {every!r}")
        if isinstance(factor, bool) or not (isinstance(factor, numbers.Real) and 0 < factor <= 1):
            raise ValueError(f"StepDecay factor must lie in (0, 1], got {factor!r}")
        self.every, self.factor_ = int(every), float(factor)

    def factor(self, iteration):
        # a lr this small is refused by no optimizer but trains nothing: the power stops there
        return max(self.factor_ ** (iteration // self.every), 1e-30)

    def state_dict(self):
        return {"kind": "step", "every": self.every, "factor": self.factor_}

    def __repr__(self):
        return f"StepDecay(every={self.every}, factor={self.factor_})"


SCHEDULES = (LinearDecay, StepDecay)


def schedule_from_state(d):
    """The schedule a state_dict() came from (a dict without "kind": a LinearDecay, as older
    checkpoints wrote it)."""
    kind = d.get("kind", "linear")
    if kind == "step":
        return StepDecay(d["every"], d["factor"])
    if kind == "linear":
        return LinearDecay(d["start"], d["end"], d["to"])
    raise ValueError(f"unknown schedule kind {kind!r}")
