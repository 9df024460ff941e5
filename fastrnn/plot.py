"""Loss curves as a PNG (matplotlib, an optional extra: pip install "fastrnn[plot]")."""
from __future__ import annotations

import json
import os
from typing import Any


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib, an optional extra: "
                          "pip install 'fastrnn[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt
    return plt


def read_log(path: str | os.PathLike) -> dict[str, list]:
    """A Trainer.history-like dict {"train": [(iteration, nats/char, smooth)], "val":
    [(iteration, nats/char)]} from a JSON-lines log written by fit(log=...)."""
    history = {"train": [], "val": []}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not a JSON line") from None
            if r.get("kind") == "train":
                history["train"].append((r["iteration"], r["loss"], r["smooth_nats_per_char"]))
            elif r.get("kind") == "val":
                history["val"].append((r["iteration"], r["loss"]))
    return history


def check_path(path):
    """A clear error now, not after a run, for a path the plot could not be written to: a
    missing or unwritable directory, a directory itself, or a format matplotlib lacks."""
    plt = require_matplotlib()
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"--plot {path} is a directory; give a file name such as loss.png")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--plot {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"--plot {path}: the directory {folder} is not writable")
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    fig = plt.figure()
    try:
        formats = fig.canvas.get_supported_filetypes()
    finally:
        plt.close(fig)
    if ext not in formats:
        raise ValueError(f"--plot {path}: matplotlib writes {', '.join(sorted(formats))} files; "
                         f"end the name with one of them (e.g. .png)")


def moving_mean(values, window):
    """The mean of each value and up to window - 1 before it (fewer at the start: no bias
    towards any starting value)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_history(history: Any, path: str | os.PathLike, *, title: str | None = None,
                 baseline: float | None = None) -> None:
    """Writes a PNG of the train and validation loss in nats/char against the iteration, with
    a moving mean of the train loss over the last ~10% of its points (the gist's 0.999 moving
    average, which starts at the uniform guess's loss, would lag far above the real curve).
    history: a Trainer.history dict, a Trainer, or the path of a JSON-lines log. baseline: an
    optional nats/char level to draw as a horizontal line (e.g. the n-gram's)."""
    if isinstance(history, (str, os.PathLike)):
        history = read_log(history)
    elif hasattr(history, "history"):
        history = history.history
    if not isinstance(history, dict):
        raise TypeError(f"plot_history takes a Trainer, its .history dict or the path of a "
                        f"fit(log=...) file, got {type(history).__name__}")
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        train, val = history.get("train", []), history.get("val", [])
        if train:
            it = [r[0] for r in train]
            ax.plot(it, [r[1] for r in train], lw=0.8, alpha=0.6, label="train")
            window = max(1, min(50, len(train) // 10))
            ax.plot(it, moving_mean([r[1] for r in train], window), lw=1.5,
                    label=f"train (mean of {window} points)")
        if val:
            ax.plot([r[0] for r in val], [r[1] for r in val], "o-", lw=1.5, ms=3,
                    label="validation")
        if baseline is not None:
            ax.axhline(baseline, color="gray", ls="--", lw=1, label="n-gram baseline")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (nats/char)")
        ax.set_title(title or "fastrnn training")
        ax.grid(alpha=0.3)
        if train or val:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
