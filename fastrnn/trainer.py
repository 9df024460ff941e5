"""Trainer: walks a corpus in chunks of seq_length and trains with truncated BPTT."""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .model import as_ids, check_positive_int
from .optim import Adagrad


@dataclass
class TrainResult:
    """What one `Trainer.fit` call did. `losses` holds each iteration's summed chunk loss."""
    iterations: int                  # total iterations of the trainer so far
    smooth_loss: float               # min-char-rnn EMA of the chunk loss
    losses: np.ndarray = field(repr=False)
    seconds: float = 0.0
    chars_per_sec: float = 0.0


class Trainer:
    """Trains `model` on the id sequence `ids`.

    batch_size=1 walks the data exactly like min-char-rnn: position 0, steps of seq_length, the
    hidden state carried across chunks, and both reset to zero when p + seq_length + 1 >= len(ids).
    batch_size=B > 1 splits the corpus into B contiguous streams (char-rnn style), each carrying
    its own hidden state and restarting at the beginning of its stream when it runs out.
    The loss minimised is summed over all B*T tokens of a chunk, as in the gist.
    """

    def __init__(self, model, ids, *, seq_length=25, batch_size=1, optimizer=None):
        self.model = model
        self.seq_length = T = check_positive_int(seq_length, "seq_length")
        self.batch_size = B = check_positive_int(batch_size, "batch_size")
        self.ids = as_ids(ids, model.vocab_size, "ids", ndims=(1,))
        if len(self.ids) < B * T + 1:
            raise ValueError(f"the corpus has {len(self.ids)} ids; seq_length={T} with "
                             f"batch_size={B} needs at least {B * T + 1}")
        self.optimizer = optimizer if optimizer is not None else Adagrad(model)
        if self.optimizer.model is not model:
            raise ValueError("the optimizer was made for another model")
        self.iteration = 0
        self.smooth_loss = -math.log(1.0 / model.vocab_size) * T * B
        self.h = np.zeros((B, model.hidden_size), dtype=model.dtype)
        # stream b covers pairs (ids[i], ids[i+1]) for i in [starts[b], starts[b+1])
        n_pairs = len(self.ids) - 1
        self.starts = np.array([b * n_pairs // B for b in range(B + 1)], dtype=np.int64)
        self.positions = np.zeros(B, dtype=np.int64)
        self._x = np.empty((B, T), dtype=np.int32)
        self._y = np.empty((B, T), dtype=np.int32)

    def _next_chunk(self):
        """Fills self._x/_y with the next chunk and resets the state of streams that wrap."""
        T, ids = self.seq_length, self.ids
        if self.batch_size == 1:  # min-char-rnn's walk, kept literal
            p = int(self.positions[0])
            if p + T + 1 >= len(ids) or self.iteration == 0:
                p = 0
                self.h[...] = 0
            self._x[0] = ids[p:p + T]
            self._y[0] = ids[p + 1:p + T + 1]
            self.positions[0] = p + T
            return
        for b in range(self.batch_size):
            start, end = self.starts[b], self.starts[b + 1]
            p = start + self.positions[b]
            if p + T > end:
                p = start
                self.positions[b] = 0
                self.h[b] = 0
            self._x[b] = ids[p:p + T]
            self._y[b] = ids[p + 1:p + T + 1]
            self.positions[b] += T

    def step(self):
        """One training iteration; returns its summed loss."""
        self._next_chunk()
        loss = self.model._backend.train_step(self._x, self._y, self.h, self.optimizer)
        self.smooth_loss = self.smooth_loss * 0.999 + loss * 0.001
        self.iteration += 1
        return loss

    def fit(self, iterations, *, print_every=0, callback=None, file=None):
        """Runs `iterations` training iterations.

        print_every > 0 prints "iter N, loss: L" (the gist's smooth loss) that often;
        callback(trainer, loss) is called after every iteration.
        """
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
        losses = np.empty(iterations, dtype=np.float64)
        t0 = time.perf_counter()
        for i in range(iterations):
            losses[i] = loss = self.step()
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss} at iteration {self.iteration}: training diverged "
                    f"(try a smaller learning rate or clipping)")
            if print_every and self.iteration % print_every == 0:
                print(f"iter {self.iteration}, loss: {self.smooth_loss:f}", file=file, flush=True)
            if callback is not None:
                callback(self, loss)
        seconds = time.perf_counter() - t0
        chars = iterations * self.seq_length * self.batch_size
        return TrainResult(iterations=self.iteration, smooth_loss=self.smooth_loss,
                           losses=losses, seconds=seconds,
                           chars_per_sec=chars / seconds if seconds > 0 else float("inf"))
