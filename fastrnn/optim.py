"""Optimizers. Each holds its hyperparameters and a flat state buffer shaped like the model's
parameters; the model's backend applies the update (fused in compiled code on `cython`)."""
import math
import numbers


def _check_positive(value, name, allow_inf=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            value > 0 and (allow_inf or value < math.inf)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Adagrad:
    """Adagrad as in min-char-rnn: clip each gradient element to [-clip, clip] (clip=None: off),
    then mem += g*g and param -= lr * g / sqrt(mem + eps)."""

    name = "adagrad"

    def __init__(self, model, lr=0.1, eps=1e-8, clip=5.0):
        self.model = model
        self.lr = _check_positive(lr, "lr")
        self.eps = _check_positive(eps, "eps")
        self.clip = None if clip is None else _check_positive(clip, "clip", allow_inf=True)
        self.state = {"mem": model._backend.zeros()}

    def __repr__(self):
        return f"Adagrad(lr={self.lr}, eps={self.eps}, clip={self.clip})"

    def step(self, grads):
        """Updates the model's parameters in place from a dict of gradients (left unchanged)."""
        from ._params import check_tensors
        m = self.model
        grads = check_tensors(grads, m.hidden_size, m.vocab_size, what="grads")
        m._backend.update(self, m._backend.to_flat(grads))
