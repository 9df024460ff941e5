"""Loss curves as a PNG (matplotlib, an optional extra: pip install "fastrnn[plot]")."""
import json
import os


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plotting needs matplotlib, an optional extra: "
                          "pip install 'fastrnn[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt
    return plt


def read_log(path):
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


def plot_history(history, path, *, title=None, baseline=None):
    """Writes a PNG of the train (and smoothed) and validation loss in nats/char against the
    iteration. history: a Trainer.history dict, a Trainer, or the path of a JSON-lines log.
    baseline: an optional nats/char level to draw as a horizontal line (e.g. the n-gram's)."""
    if isinstance(history, (str, os.PathLike)):
        history = read_log(history)
    elif hasattr(history, "history"):
        history = history.history
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        train, val = history.get("train", []), history.get("val", [])
        if train:
            it = [r[0] for r in train]
            ax.plot(it, [r[1] for r in train], lw=0.8, alpha=0.6, label="train")
            ax.plot(it, [r[2] for r in train], lw=1.5, label="train (smooth)")
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
