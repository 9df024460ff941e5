"""Trainer: walks a corpus in chunks of seq_length and trains with truncated BPTT.

The data walk:
- batch_size=1 walks the data exactly like min-char-rnn: position 0, steps of seq_length, the
  hidden state carried across chunks, and position (and, with reset="wrap", state) back to zero
  when p + seq_length + 1 >= len(ids). Like the gist, each pass leaves out the last
  1 to seq_length (input, target) pairs (`untrained_pairs`).
- batch_size=B > 1 splits the len(ids)-1 (input, target) pairs into B contiguous streams of
  L = (len(ids)-1) // B pairs (char-rnn style); iteration i trains on pairs [p, p+T) of every
  stream, each stream carrying its own hidden state, so batch row b of iteration i+1 continues
  where row b of iteration i stopped. The last chunk of a pass is shorter when T does not divide
  L, so no stream's tail is dropped; only the (len(ids)-1) mod B < B pairs after the last stream
  are left out (`untrained_pairs`).
Reset policy for the carried state: "wrap" (zero a stream's state when it wraps to its start),
"never", or "every" (zero before every chunk: no state carried).

Divergence: a step whose loss is not finite, or whose update would leave a NaN or infinity in the
parameters or the optimizer state, is never taken: parameters, optimizer state and carried state
stay as they were. nan_policy="raise" (the default) then stops with FloatingPointError naming the
iteration; "skip" counts the step as done (the walk moves on), zeroes the carried state and goes
on, unless MAX_SKIPS_IN_A_ROW steps in a row are refused.

The ids are kept in the smallest integer type that holds the vocabulary (uint8 up to 256
symbols), without a copy when they come in that type, so a large corpus costs one byte a
character; each chunk is widened to int32 for the kernels as it is taken.

The loss minimised is the cross-entropy summed over the chunk's tokens (reduction="sum", as the
gist) or averaged over them (reduction="mean": gradients scaled by 1/tokens before clipping).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from ._progress import LN2, Reporter, SigintFlag, append_bounded
from .checkpoint import CheckpointError, RunLock
from .model import check_positive_int
from .optim import SCHEDULES, Adagrad, Adam, Optimizer, make_optimizer, schedule_from_state

if TYPE_CHECKING:
    from .model import CharRNN
    from .optim import LinearDecay, StepDecay

RESETS = ("wrap", "never", "every")
REDUCTIONS = ("sum", "mean")
NAN_POLICIES = ("raise", "skip")
MAX_SKIPS_IN_A_ROW = 100  # "skip" gives up after this many refused steps in a row
HASH_CHUNK = 1 << 22      # ids hashed this many at a time (as int32, the fingerprint's format)
MAX_LOSSES = 1 << 20      # TrainResult.losses keeps the last this many (8 MiB)
UNIGRAM_MARGIN = 0.01    # nats/char a model may trail the unigram guess by before a warning


def _sha256_ids(ids):
    digest = hashlib.sha256()
    for i in range(0, len(ids), HASH_CHUNK):
        digest.update(ids[i:i + HASH_CHUNK].astype(np.int32).data)
    return digest.hexdigest()


def _counts(ids, n):
    """np.bincount(ids, minlength=n), a million ids at a time (bincount widens its input to
    intp: 8 bytes an id)."""
    counts = np.zeros(n, dtype=np.int64)
    for i in range(0, len(ids), 1 << 20):
        counts += np.bincount(ids[i:i + (1 << 20)], minlength=n)
    return counts


def _generator_state(state, key):
    """The numpy bit generator state saved as JSON under `key`, checked (on a scratch
    generator) before any trainer's generator is given it; ValueError if it is not one."""
    text = str(state[key])
    if len(text) > MAX_RNG_STATE:
        raise ValueError(f"{key} is {len(text)} characters; at most {MAX_RNG_STATE}")
    try:
        value = json.loads(text)
        np.random.default_rng().bit_generator.state = value
    except RecursionError:
        raise ValueError(f"{key} is nested too deeply") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{key} is not a generator state ({exc!r})") from None
    return value


def _count(state, key):
    """A non-negative integer entry of a state dict, or ValueError."""
    a = np.asarray(state[key])
    if a.shape != () or a.dtype.kind not in "iu" or int(a) < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {a!r}"[:200])
    return int(a)


class DivergedError(FloatingPointError):
    """Training diverged: `iteration` is the step not taken, `reason` why; the model and the
    optimizer are as before that step."""

    def __init__(self, message, iteration, reason):
        super().__init__(message)
        self.iteration, self.reason = iteration, reason


class WorseThanUnigramWarning(RuntimeWarning):
    """A trained model predicts worse than the training characters' frequencies do."""


class ResumeMismatch(CheckpointError):
    """Resuming a checkpoint with data or settings other than its own (a ValueError, and a
    CheckpointError: the file is not one this trainer can continue)."""


MAX_RNG_STATE = 4096  # characters of the JSON rng state in a checkpoint (PCG64's is ~150)


def ids_dtype(vocab_size):
    """The smallest integer type that holds ids 0..vocab_size-1 (int32 beyond uint16, as the
    kernels take)."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


def compact_ids(a, vocab_size, name):
    """A 1-D id array checked like model.as_ids, in ids_dtype(vocab_size) (no copy when it
    already is, contiguous)."""
    a = np.asarray(a)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an array of integer ids, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must have 1 dimension(s), got shape {a.shape}")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} holds ids in [{lo}, {hi}]; ids must lie in [0, {vocab_size}) "
                         f"for vocab_size={vocab_size}")
    return np.ascontiguousarray(a, dtype=ids_dtype(vocab_size))


@dataclass
class TrainResult:
    """What one `Trainer.fit` call did. `losses` holds the summed chunk loss of each of the
    call's last min(steps, MAX_LOSSES) iterations, oldest first (all of them unless the call
    ran more than MAX_LOSSES: memory does not grow with the number of iterations)."""
    iterations: int                  # total iterations of the trainer so far
    smooth_loss: float               # min-char-rnn EMA of the chunk loss
    losses: np.ndarray = field(repr=False)
    steps: int = 0                   # iterations run by this call
    seconds: float = 0.0             # wall time of the call, evaluation and checkpoints included
    chars_per_sec: float = 0.0       # trained characters per second of wall time
    step_seconds: float = 0.0        # time spent in training iterations alone
    interrupted: bool = False        # stopped early by Ctrl-C (SIGINT)
    best_val_loss: float = math.inf  # best validation nats/char seen so far
    skipped_steps: int = 0           # steps not taken (non-finite; nan_policy="skip") this call


def default_optimizer(model, batch_size):
    """The gist's Adagrad (lr 0.1, clip 5) for batch_size 1. For B > 1, where it trains poorly
    (issue 4 measured 2.41 nats/char against PyTorch Adam's 1.78), Adam with lr 4e-3 and the
    global gradient norm clipped to 5: with the default summed loss the clip normalises every
    step's gradient, which trained best of the settings compared
    (bench/notes/2026-11-22-training-settings.md)."""
    return Adagrad(model) if batch_size == 1 else Adam(model, lr=4e-3)


def metrics(total_nats, count, n_bytes=None):
    """Loss metrics of `count` predictions costing `total_nats`: nats/char, bits/char,
    perplexity, and bits/byte when the predicted characters' byte count is given."""
    nats = total_nats / count
    perplexity = math.exp(nats) if nats < 709 else math.inf  # a diverged model's overflows
    out = {"nats_per_char": nats, "bits_per_char": nats / LN2, "perplexity": perplexity,
           "chars": count}
    if n_bytes:
        out["bits_per_byte"] = total_nats / LN2 / n_bytes
    return out


class Trainer:
    """Trains `model` on the id sequence `ids` (see the module docstring for the walk).

    optimizer: an optimizer of fastrnn.optim for this model, or the name of one ("adagrad",
    "sgd", "rmsprop", "adam": made for the model with its defaults; default: default_optimizer).
    val_ids: held-out ids for `fit(eval_every=...)` and the best checkpoint.
    nan_policy: "raise" or "skip" a step that diverges (see the module docstring).
    lr_schedule: None (the optimizer's lr throughout), a fastrnn.LinearDecay (hold, then lower
    linearly) or a fastrnn.StepDecay (char-rnn's: times a factor every N iterations); before
    each update the optimizer's lr is set to the lr it had when the trainer was made times the
    schedule's factor for the iteration. Checkpoints keep both, so a resumed run goes on alike.
    """

    def __init__(self, model: CharRNN, ids: Any, *, seq_length: int = 25, batch_size: int = 1,
                 optimizer: Optimizer | str | None = None, reset: str = "wrap",
                 reduction: str = "sum", val_ids: Any = None, seed: int = 0,
                 nan_policy: str = "raise",
                 lr_schedule: LinearDecay | StepDecay | None = None) -> None:
        self.model = model
        self.seq_length = T = check_positive_int(seq_length, "seq_length")
        self.batch_size = B = check_positive_int(batch_size, "batch_size")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, "
                             f"got {reduction!r}")
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}, "
                             f"got {nan_policy!r}")
        self.reset, self.reduction, self.nan_policy = reset, reduction, nan_policy
        self.ids = compact_ids(ids, model.vocab_size, "ids")
        if len(self.ids) < B * T + 1:
            raise ValueError(f"the corpus has {len(self.ids)} ids; seq_length={T} with "
                             f"batch_size={B} needs at least {B * T + 1}")
        self.val_ids = None if val_ids is None else compact_ids(val_ids, model.vocab_size,
                                                                "val_ids")
        if self.val_ids is not None and len(self.val_ids) < 2:
            raise ValueError("val_ids needs at least 2 ids")
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, model)
        elif optimizer is not None and not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastrnn optimizer or the name of one, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer if optimizer is not None else default_optimizer(model, B)
        if self.optimizer.model is not model:
            raise ValueError("the optimizer was made for another model")
        if lr_schedule is not None and not isinstance(lr_schedule, SCHEDULES):
            raise TypeError(f"lr_schedule must be None, a fastrnn.LinearDecay or a "
                            f"fastrnn.StepDecay, got {lr_schedule!r}")
        self.lr_schedule, self.base_lr = lr_schedule, self.optimizer.lr
        n_pairs = len(self.ids) - 1
        if B == 1:
            self.stream_length = n_pairs
            self.iterations_per_epoch = max(1, -(-(n_pairs - T) // T))
            self.untrained_pairs = n_pairs - T * self.iterations_per_epoch
        else:
            self.stream_length = n_pairs // B
            self.iterations_per_epoch = -(-self.stream_length // T)
            self.untrained_pairs = n_pairs - B * self.stream_length
        self.starts = np.arange(B, dtype=np.int64) * self.stream_length
        self.iteration = 0
        self.skipped_steps = 0       # steps refused as non-finite and skipped, in all
        self._skips_in_a_row = 0
        self._fingerprint = self._val_fingerprint = self._unigram = None
        self._unigram_on = {}
        self.smooth_loss = -math.log(1.0 / model.vocab_size) * T * B
        self.h = model._initial_state(None, B, False)  # carried state, as the backend takes it
        # dropout masks come from their own generator, saved with checkpoints, so a resumed run
        # draws the same masks (and the samples shown during fit do not shift them)
        self.dropout_rng = np.random.default_rng([seed, 1])
        self.position = 0            # offset of the next chunk inside every stream
        self.history = {"train": [], "val": []}   # (iteration, nats/char[, smooth nats/char])
        self.best_val_loss = math.inf
        self.rng = np.random.default_rng(seed)    # draws the samples shown during fit
        self._loss_since, self._tokens_since, self._last_tokens = 0.0, 0, 0
        self.meta = {}   # plain str/number settings of the run, saved with checkpoints

    @property
    def epoch(self) -> float:
        """Passes over the training data so far (fractional)."""
        return self.iteration / self.iterations_per_epoch

    # -- the walk ------------------------------------------------------------------------------
    def next_chunk(self):
        """(inputs, targets) (B, t) of the next iteration, with the carried state of streams
        that start over reset as the policy says. Advances the walk."""
        T, B, ids = self.seq_length, self.batch_size, self.ids
        if B == 1:  # min-char-rnn's walk, kept literal
            p = self.position
            if p + T + 1 >= len(ids) or self.iteration == 0:
                p = 0
                if self.reset == "wrap":
                    self._zero_state()
            if self.reset == "every":
                self._zero_state()
            self.position = p + T
            w = ids[p:p + T + 1].astype(np.int32)
            return w[None, :-1], w[None, 1:]
        p = self.position
        if self.reset == "every" or (self.reset == "wrap" and p == 0):
            self._zero_state()
        t = min(T, self.stream_length - p)
        rows = (self.starts + p)[:, None] + np.arange(t + 1)
        window = ids[rows]
        self.position = (p + t) % self.stream_length
        return (np.ascontiguousarray(window[:, :-1], dtype=np.int32),
                np.ascontiguousarray(window[:, 1:], dtype=np.int32))

    def step(self) -> float:
        """One training iteration; returns its summed loss. A step that diverges is not taken
        (see the module docstring): with nan_policy="raise" FloatingPointError, and the trainer
        is as before the call; with "skip" the step counts in `skipped_steps`."""
        position = self.position
        x, y = self.next_chunk()
        tokens = x.size
        scale = 1.0 if self.reduction == "sum" else 1.0 / tokens
        if self.lr_schedule is not None:
            self.optimizer.lr = self.base_lr * self.lr_schedule.factor(self.iteration)
        loss, taken = self._train_chunk(x, y, scale, self.dropout_masks(*x.shape))
        if not taken:
            return self._refused(loss, position, tokens)
        self._skips_in_a_row = 0
        full = self.seq_length * self.batch_size
        chunk = loss if tokens == full else loss * full / tokens  # a short chunk, made full
        self.smooth_loss = self.smooth_loss * 0.999 + chunk * 0.001
        self.iteration += 1
        self._loss_since += loss
        self._tokens_since += tokens
        self._last_tokens = tokens
        return loss

    def _train_chunk(self, x, y, grad_scale, masks=None):
        """One fused training iteration on the chunk (x, y) from the carried states self.h
        (updated in place), gradients scaled by grad_scale, dropout masks (L-1,B,T,H) or None;
        returns (summed loss, taken): a step with a non-finite loss or update is not taken (see
        nan_policy)."""
        return self.model._backend.train_step_guarded(x, y, self.h, self.optimizer, grad_scale,
                                                       masks)

    def _zero_state(self):
        for a in self._states():
            a[...] = 0

    def _states(self):
        """The carried state's arrays: (h,) or (h, c)."""
        return (self.h,) if isinstance(self.h, np.ndarray) else self.h

    def dropout_masks(self, B, T):
        """Inverted-dropout masks (L-1,B,T,H) for a training chunk: 0 with probability p, else
        1/(1-p); None when the model has no dropout."""
        m = self.model
        p, L = m.dropout, m.num_layers
        if p == 0 or L == 1:
            return None
        keep = self.dropout_rng.random((L - 1, B, T, m.hidden_size), dtype=np.float32) >= p
        return keep.astype(m.dtype) * m.dtype.type(1.0 / (1.0 - p))

    def _refused(self, loss, position, tokens):
        """What follows a step the backend refused to take (non-finite)."""
        what = (f"the loss became {loss}" if not math.isfinite(loss) else
                "its update would have left NaN or infinite parameters")
        hint = ("try a smaller learning rate or gradient clipping (clip, clip_norm), or "
                "nan_policy='skip' to skip such steps")
        if self.nan_policy == "raise":
            self.position = position  # as before the call: the same chunk comes next
            raise DivergedError(f"training diverged at iteration {self.iteration + 1}: {what}; "
                                f"the parameters are kept from before that step ({hint})",
                                self.iteration + 1, what)
        self._zero_state()
        self.iteration += 1
        self.skipped_steps += 1
        self._skips_in_a_row += 1
        self._last_tokens = tokens
        if self._skips_in_a_row >= MAX_SKIPS_IN_A_ROW:
            what = f"{self._skips_in_a_row} steps in a row were skipped, the last as {what}"
            raise DivergedError(f"training diverged at iteration {self.iteration}: {what}; the "
                                f"parameters are kept from before them (try a smaller learning "
                                f"rate or gradient clipping)", self.iteration, what)
        return loss

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, ids: Any = None, *, batch_size: int | None = None,
                 chunk_length: int | None = None) -> dict[str, float]:
        """Metrics (see `metrics`) of the model on `ids` (default: val_ids), predicting each id
        from those before it, in batch_size streams as in CharRNN.nll (default: the trainer's
        batch_size, at least 16, which keeps periodic validation cheap)."""
        ids = self.val_ids if ids is None else ids
        if ids is None:
            raise ValueError("evaluate needs ids (or a trainer made with val_ids)")
        m = self.model
        total, count = m.nll(ids, batch_size=batch_size or max(self.batch_size, 16),
                             chunk_length=chunk_length or max(self.seq_length, 64))
        n_bytes = None
        if m.vocab is not None:
            counts = np.bincount(np.asarray(ids)[1:], minlength=len(m.vocab))
            n_bytes = int(counts @ m.vocab.byte_lengths())
        return metrics(total, count, n_bytes)

    # -- the loop ------------------------------------------------------------------------------
    def fit(self, iterations: int, *, print_every: int = 0,
            callback: Callable[[Trainer, float], object] | None = None, file: IO | None = None,
            progress: bool | None = False, eval_every: int = 0, sample_every: int = 0,
            sample_length: int = 200, checkpoint_every: int = 0,
            checkpoint_dir: str | os.PathLike | None = None,
            log: str | os.PathLike | IO | None = None) -> TrainResult:
        """Runs `iterations` training iterations (stopping early, cleanly, on Ctrl-C).

        print_every > 0 prints "iter N, loss: L" (the gist's smooth loss) and more that often
        (in place of a progress bar). progress=True shows a tqdm bar (None: only on a terminal).
        eval_every > 0 evaluates on val_ids that often (and at the end); sample_every > 0 shows
        a sample. checkpoint_dir gets latest.npz every checkpoint_every iterations, at the end
        and on Ctrl-C, and best.npz whenever the validation loss improves. log: a path or an
        open file that receives every reported metric as a JSON line.
        callback(trainer, loss) is called after every iteration.
        """
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
        for name, v in (("print_every", print_every), ("eval_every", eval_every),
                        ("sample_every", sample_every), ("checkpoint_every", checkpoint_every)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if eval_every and self.val_ids is None:
            raise ValueError("eval_every needs a trainer made with val_ids")
        if checkpoint_dir is not None:
            os.makedirs(checkpoint_dir, exist_ok=True)
        lock = report = None
        # the last MAX_LOSSES losses, in a ring: memory does not grow with the iterations
        losses = np.empty(min(iterations, MAX_LOSSES), dtype=np.float64)
        t0, done, tokens, interrupted = time.perf_counter(), 0, 0, False
        skipped = self.skipped_steps
        step_seconds = 0.0
        try:
            if checkpoint_dir is not None:  # the run owns its directory
                lock = RunLock(checkpoint_dir).acquire()
            report = Reporter(self, iterations, progress, print_every, file, log)
            with SigintFlag() as sigint:
                for i in range(iterations):
                    t_step = time.perf_counter()
                    losses[i % MAX_LOSSES] = loss = self.step()
                    t_step = time.perf_counter() - t_step
                    report.step_seconds += t_step
                    step_seconds += t_step
                    done += 1
                    tokens += self._last_tokens
                    last = i == iterations - 1
                    report.iteration(loss)
                    if eval_every and (self.iteration % eval_every == 0 or last):
                        self._validate(report, checkpoint_dir, last)
                    if sample_every and self.iteration % sample_every == 0 and \
                            self.model.vocab is not None:
                        text = self.model.sample_text(sample_length,
                                                      seed=int(self.rng.integers(2**63)))
                        report.sample(text)
                    if checkpoint_dir and checkpoint_every and \
                            self.iteration % checkpoint_every == 0:
                        self.save(os.path.join(checkpoint_dir, "latest.npz"))
                    if callback is not None:
                        callback(self, loss)
                    if sigint.hit:
                        interrupted = True
                        break
                if checkpoint_dir is not None:
                    self.save(os.path.join(checkpoint_dir, "latest.npz"))
        finally:
            if lock is not None:
                lock.release()
            if report is not None:
                report.close()
        seconds = time.perf_counter() - t0
        if done > MAX_LOSSES:  # the ring, oldest first
            cut = done % MAX_LOSSES
            losses = np.concatenate((losses[cut:], losses[:cut]))
        return TrainResult(iterations=self.iteration, smooth_loss=self.smooth_loss,
                           losses=losses[:done], steps=done, seconds=seconds,
                           chars_per_sec=tokens / seconds if seconds > 0 else float("inf"),
                           interrupted=interrupted, best_val_loss=self.best_val_loss,
                           step_seconds=step_seconds,
                           skipped_steps=self.skipped_steps - skipped)

    def _validate(self, report, checkpoint_dir, last=False):
        m = self.evaluate()
        nats = m["nats_per_char"]
        had_beaten_unigram = self.best_val_loss < self.unigram_nats(self.val_ids)
        append_bounded(self.history["val"], (self.iteration, nats))
        best = nats < self.best_val_loss
        if best:
            self.best_val_loss = nats
            if checkpoint_dir is not None:
                self.save(os.path.join(checkpoint_dir, "best.npz"))
        report.validation(m, best)
        if last or had_beaten_unigram:  # early in a run a model may still trail it
            message = self.unigram_warning(nats, "validation")
            if message:
                report.warning(message)
                warnings.warn(message, WorseThanUnigramWarning, stacklevel=3)

    def unigram_nats(self, ids=None):
        """The unigram guess's loss (nats/char) on `ids` (default: the training ids): each id
        after the first predicted with the training characters' frequencies (each count + 1/2,
        so that none is impossible), ignoring context. A trained model must do better; on the
        training ids this is their entropy, near enough."""
        if self._unigram is None:
            counts = _counts(self.ids, self.model.vocab_size) + 0.5
            self._unigram = np.log(counts / counts.sum())
        if ids is None or ids is self.val_ids:
            key = "train" if ids is None else "val"
            if key not in self._unigram_on:
                scored = self.ids if ids is None else self.val_ids
                self._unigram_on[key] = self._unigram_loss(scored)
            return self._unigram_on[key]
        return self._unigram_loss(np.asarray(ids))

    def _unigram_loss(self, ids):
        counts = _counts(ids[1:], self.model.vocab_size)
        return float(-(counts @ self._unigram) / max(counts.sum(), 1))

    def unigram_warning(self, nats, what, ids=None):
        """The one-line warning for a model whose loss `nats` on `what` (the ids `ids`;
        default: the validation ids) is worse than the unigram guess's there, or None."""
        unigram = self.unigram_nats(self.val_ids if ids is None else ids)
        if not nats > unigram + UNIGRAM_MARGIN:  # NaN warns too
            return None
        return (f"the model's {what} loss, {nats:.3f} nats/char at iteration "
                f"{self.iteration:,}, is worse than a unigram guess ({unigram:.3f} nats/char "
                f"from the training characters' frequencies): this model is useless; train "
                f"with a smaller learning rate, and use the best checkpoint if one was kept")

    # -- checkpoints ---------------------------------------------------------------------------
    def data_fingerprint(self):
        """sha256 of the training ids as int32 (whatever type they are kept in), computed once:
        the trainer's ids must not be changed."""
        if self._fingerprint is None:
            self._fingerprint = _sha256_ids(self.ids)
        return self._fingerprint

    def val_fingerprint(self):
        """sha256 of the held-out ids as int32 (None without val_ids)."""
        if self.val_ids is None:
            return None
        if self._val_fingerprint is None:
            self._val_fingerprint = _sha256_ids(self.val_ids)
        return self._val_fingerprint

    def state_dict(self) -> dict[str, Any]:
        """Everything besides the model that continuing exactly needs, as plain values."""
        rng = self.rng.bit_generator.state
        return {
            "seq_length": self.seq_length, "batch_size": self.batch_size, "reset": self.reset,
            "reduction": self.reduction, "iteration": self.iteration,
            "smooth_loss": self.smooth_loss, "h": self._states()[0].copy(),
            "position": self.position,
            "stream_positions": self.starts + self.position,
            "best_val_loss": self.best_val_loss,
            "history_train": np.array(self.history["train"], dtype=np.float64).reshape(-1, 3),
            "history_val": np.array(self.history["val"], dtype=np.float64).reshape(-1, 2),
            "rng_state": json.dumps(rng), "data_length": len(self.ids),
            "dropout_rng_state": json.dumps(self.dropout_rng.bit_generator.state),
            **({"c": self.h[1].copy()} if isinstance(self.h, tuple) and len(self.h) == 2
               else {}),
            "data_sha256": self.data_fingerprint(),
            **({} if self.val_ids is None else {"val_sha256": self.val_fingerprint()}),
            "loss_since": self._loss_since, "tokens_since": self._tokens_since,
            "nan_policy": self.nan_policy, "skipped_steps": self.skipped_steps,
            "lr_schedule": "" if self.lr_schedule is None else json.dumps(
                dict(self.lr_schedule.state_dict(), base_lr=self.base_lr)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores what state_dict returned; the data and settings must be those it was saved
        with (else ResumeMismatch). Every value is checked before it is used: ValueError for
        one that cannot be right (a position outside the data, a state of another shape)."""
        for key in ("seq_length", "batch_size"):
            if int(state[key]) != getattr(self, key):
                raise ResumeMismatch(f"the checkpoint was trained with {key}={int(state[key])}, "
                                     f"this trainer has {getattr(self, key)}")
        if int(state["data_length"]) != len(self.ids) or \
                str(state["data_sha256"]) != self.data_fingerprint():
            raise ResumeMismatch(f"the training data differs from the checkpoint's "
                                 f"({int(state['data_length'])} ids, sha256 "
                                 f"{str(state['data_sha256'])[:12]}…); resuming needs the same "
                                 f"data and --val-frac")
        if "val_sha256" in state and self.val_ids is not None and \
                str(state["val_sha256"]) != self.val_fingerprint():
            raise ResumeMismatch("the held-out (validation) data differs from the checkpoint's "
                                 "although the training data is the same; resuming needs the "
                                 "same data and --val-frac")
        reset, reduction = str(state["reset"]), str(state["reduction"])
        if reset not in RESETS or reduction not in REDUCTIONS:
            raise ValueError(f"reset {reset!r} or reduction {reduction!r} is not one fastrnn has")
        iteration, position = _count(state, "iteration"), _count(state, "position")
        limit = len(self.ids) if self.batch_size == 1 else self.stream_length
        if position >= limit:
            raise ValueError(f"position {position} lies outside the data's [0, {limit})")
        carried = []
        for name, a in zip(("h", "c"), self._states()):
            saved = np.asarray(state[name])
            if saved.shape != a.shape or not np.all(np.isfinite(saved)):
                raise ValueError(f"the carried state {name} must be finite of shape {a.shape}, "
                                 f"got shape {saved.shape}")
            carried.append(saved)
        dropout_rng = (_generator_state(state, "dropout_rng_state")
                       if "dropout_rng_state" in state else None)  # absent: older checkpoints
        history = {}
        for key, width in (("train", 3), ("val", 2)):
            a = np.asarray(state["history_" + key], dtype=np.float64)
            if a.ndim != 2 or a.shape[1] != width:
                raise ValueError(f"history_{key} has shape {a.shape}; expected (n, {width})")
            history[key] = [tuple(r) for r in a.tolist()]
        rng = _generator_state(state, "rng_state")
        policy = str(state["nan_policy"]) if "nan_policy" in state else None  # absent: older
        if policy is not None and policy not in NAN_POLICIES:
            raise ValueError(f"the checkpoint's nan_policy {policy!r} is not one of "
                             f"{', '.join(NAN_POLICIES)}")
        schedule = str(state["lr_schedule"]) if "lr_schedule" in state else ""  # absent: older
        if len(schedule) > MAX_RNG_STATE:
            raise ValueError("lr_schedule is too long")
        if schedule:
            try:
                d = json.loads(schedule)
                schedule = schedule_from_state(d), float(d["base_lr"])
            except (KeyError, TypeError, ValueError, RecursionError, AttributeError) as exc:
                raise ValueError(f"lr_schedule is not a schedule ({exc!r})") from None
        values = (float(state["smooth_loss"]), float(state["best_val_loss"]),
                  float(state["loss_since"]), _count(state, "tokens_since"),
                  _count(state, "skipped_steps") if policy is not None else 0)
        # every value is checked: now the trainer changes, all at once
        self.rng.bit_generator.state = rng
        self.reset, self.reduction = reset, reduction
        self.iteration, self.position, self.history = iteration, position, history
        for a, saved in zip(self._states(), carried):
            a[...] = saved
        if dropout_rng is not None:
            self.dropout_rng.bit_generator.state = dropout_rng
        (self.smooth_loss, self.best_val_loss, self._loss_since, self._tokens_since,
         skipped) = values
        if policy is not None:
            self.nan_policy, self.skipped_steps = policy, skipped
        if schedule:
            self.lr_schedule, self.base_lr = schedule

    def save(self, path: str | os.PathLike) -> None:
        """Writes model, optimizer and trainer state to one .npz checkpoint, atomically."""
        from .checkpoint import write_training_checkpoint
        write_training_checkpoint(path, self)

    @classmethod
    def load(cls, path: str | os.PathLike, ids: Any, *, val_ids: Any = None,
             backend: str = "cython", device: str = "cpu") -> Trainer:
        """A trainer (with its model and optimizer) continuing exactly from checkpoint `path`,
        on the same training ids it was saved with."""
        from .checkpoint import read_training_checkpoint
        return read_training_checkpoint(path, ids, val_ids=val_ids, backend=backend,
                                        device=device)
