"""What a training run shows while it goes: the progress bar, printed lines, the JSON-lines log,
and the Ctrl-C flag that lets an iteration finish before the run stops."""
import json
import math
import os
import signal
import threading
import time

LN2 = math.log(2)
MAX_HISTORY = 100_000  # points of a history list; past it every other older point is dropped
# The bar and every printed line fit an 80-column terminal: the bar leaves out tqdm's elapsed
# time and iterations/s (chars/s says more) so that the loss and the speed stay visible.
BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} eta {remaining}{postfix}"


def kchars(cps):
    """A speed in characters per second, short: 950 chars/s, 12.3k chars/s, 1.23M chars/s."""
    if not math.isfinite(cps):
        return "- chars/s"
    if cps < 1e4:
        return f"{cps:,.0f} chars/s"
    return f"{cps / 1e3:,.1f}k chars/s" if cps < 1e6 else f"{cps / 1e6:,.2f}M chars/s"


def postfix(nats, smooth_per_char, cps):
    """The progress bar's text after the bar: the last reports' loss, the smoothed loss (both
    nats/char) and the speed."""
    return f"{nats:.3f} nats/char (smooth {smooth_per_char:.3f}), {kchars(cps)}"


def train_line(iteration, smooth_loss, nats, cps, skipped=0):
    """The periodic line: the gist's "iter N, loss: L" (its summed smooth loss), then the loss
    per character since the last line and the speed (bits/char are in the log)."""
    # the steps skipped (non-finite) since the last line, when any, in place of the speed
    note = f"{skipped} step(s) skipped" if skipped else kchars(cps)
    return f"iter {iteration}, loss: {smooth_loss:f} ({nats:.4f} nats/char, {note})"


def val_line(iteration, m, best):
    """The validation line: nats/char, then bits/char (bits/byte instead where characters
    take more than a byte) and the perplexity."""
    bits = f"{m['bits_per_char']:.4f} bits/char"
    if "bits_per_byte" in m and not math.isclose(m["bits_per_byte"], m["bits_per_char"]):
        bits = f"{m['bits_per_byte']:.4f} bits/byte"
    return (f"iter {iteration}: val loss {m['nats_per_char']:.4f} nats/char ({bits}, "
            f"ppl {m['perplexity']:.2f}){' *best*' if best else ''}")


def append_bounded(points, point):
    """Appends to a history list, halving it (every other point but the first and last
    dropped) when it passes MAX_HISTORY: a run of any length keeps a bounded curve of its
    whole course."""
    points.append(point)
    if len(points) > MAX_HISTORY:
        del points[1:len(points) - 1:2]


class SigintFlag:
    """While active (main thread only), the first Ctrl-C sets .hit instead of raising, so a
    training iteration is never cut in half; a second one acts as before (KeyboardInterrupt)."""

    def __init__(self):
        self.hit = False
        self._old = None
        self._active = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGINT, self._handle)
            self._old = signal.SIG_DFL if old is None else old  # None: set outside Python
            self._active = True
        return self

    def _handle(self, signum, frame):
        self.hit = True
        signal.signal(signal.SIGINT, self._old)

    def __exit__(self, *exc):
        if self._active:
            signal.signal(signal.SIGINT, self._old)
            self._active = False


class Reporter:
    """Progress bar, printed lines and the JSON-lines log of one fit() call."""

    def __init__(self, trainer, total, progress, print_every, file, log):
        self.tr, self.print_every, self.file = trainer, print_every, file
        self.step_seconds = 0.0   # time in training steps since the last report
        self._skipped_reported = trainer.skipped_steps
        self.every = print_every or max(1, min(100, total // 100 or 1))
        self.bar = None
        if progress or progress is None:
            from tqdm.auto import tqdm
            # the bar goes to stderr (shown only on a terminal when progress is None); lines
            # and results go to `file`
            self.bar = tqdm(total=total, unit="it", dynamic_ncols=True, bar_format=BAR_FORMAT,
                            disable=None if progress is None else False)
            if self.bar.disable:
                self.bar = None
        self._own_log = isinstance(log, (str, os.PathLike))
        self.log = open(log, "a", encoding="utf-8") if self._own_log else log

    def _write(self, record):
        if self.log is not None:
            self.log.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
            self.log.flush()

    def _say(self, line):
        if self.bar is not None:
            self.bar.write(line, file=self.file)
        else:
            print(line, file=self.file, flush=True)

    def iteration(self, loss):
        tr = self.tr
        if self.bar is not None:
            self.bar.update(1)
        if tr.iteration % self.every:
            return
        tokens = tr._tokens_since
        skipped = tr.skipped_steps - self._skipped_reported
        self._skipped_reported = tr.skipped_steps
        note = f", {skipped} step(s) skipped (non-finite)" if skipped else ""
        if tokens == 0:  # every step since the last report was skipped
            self.step_seconds = 0.0
            self._write({"kind": "skipped", "iteration": tr.iteration, "skipped": skipped,
                         "skipped_steps": tr.skipped_steps})
            if self.bar is None and self.print_every:
                self._say(f"iter {tr.iteration}: no step taken since the last report{note}")
            return
        nats = tr._loss_since / tokens
        cps = tokens / self.step_seconds if self.step_seconds > 0 else float("inf")
        smooth_per_char = tr.smooth_loss / (tr.seq_length * tr.batch_size)
        append_bounded(tr.history["train"], (tr.iteration, nats, smooth_per_char))
        tr._loss_since, tr._tokens_since, self.step_seconds = 0.0, 0, 0.0
        self._write({"kind": "train", "iteration": tr.iteration, "epoch": round(tr.epoch, 4),
                     "loss": nats, "bits_per_char": nats / LN2, "smooth_loss": tr.smooth_loss,
                     "smooth_nats_per_char": smooth_per_char, "chars_per_sec": cps,
                     "lr": tr.optimizer.lr,
                     **({"skipped": skipped, "skipped_steps": tr.skipped_steps}
                        if skipped else {})})
        if self.bar is not None:
            self.bar.set_postfix_str(postfix(nats, smooth_per_char, cps), refresh=False)
        elif self.print_every:
            self._say(train_line(tr.iteration, tr.smooth_loss, nats, cps, skipped))

    def validation(self, m, best):
        tr = self.tr
        self._write({"kind": "val", "iteration": tr.iteration, "epoch": round(tr.epoch, 4),
                     "loss": m["nats_per_char"], **m, "best": best})
        self._say(val_line(tr.iteration, m, best))

    def warning(self, message):
        self._write({"kind": "warning", "iteration": self.tr.iteration, "message": message})

    def sample(self, text):
        self._write({"kind": "sample", "iteration": self.tr.iteration, "text": text})
        self._say(f"---- sample at iter {self.tr.iteration} ----\n{text}\n----")

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self._own_log and self.log is not None:
            self.log.close()
