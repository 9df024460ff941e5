"""How often does training end with a model worse than the unigram guess?

Trains one model per seed with the settings of a `fastrnn train` command line, then scores the
final model on the held-out part (when --val-frac leaves one) and on the last --score-chars
characters of the training text, each against the unigram guess's loss on the same text (the
training characters' frequencies: what a model that ignores context scores). Prints one line
per seed and the counts.

    python bench/robustness.py --seeds 10 -- --data corpus.txt --iterations 500

Everything after `--` is a `fastrnn train` command line (its --seed is replaced by each seed;
checkpoints, samples and evaluations during the run are turned off).
"""
import argparse
import contextlib
import io
import math
import sys
import time

import fastrnn
import fastrnn.cli as cli


def run_seed(train_argv, seed, score_chars):
    args = cli.build_parser().parse_args(["train", *train_argv])
    cli.check_options(args)
    args.seed = seed
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = cli._new_trainer(args, sys.stdout)
    total = int(trainer.meta["iterations"])
    t0 = time.perf_counter()
    trainer.fit(total, progress=False)
    seconds = time.perf_counter() - t0
    tail = trainer.ids[-score_chars:]
    train = trainer.evaluate(tail)["nats_per_char"], trainer.unigram_nats(tail)
    val = (None, None)
    if trainer.val_ids is not None:
        val = trainer.evaluate()["nats_per_char"], trainer.unigram_nats(trainer.val_ids)
    return train, val, seconds, math.log(trainer.model.vocab_size)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, train_argv = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--score-chars", type=int, default=200_000,
                   help="training characters scored at the end (the last ones)")
    args = p.parse_args(own)
    worse_train = worse_val = worse_uniform = 0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        (train, train_unigram), (val, val_unigram), seconds, uniform = run_seed(
            train_argv, seed, args.score_chars)
        bad_train = train > train_unigram
        bad_val = val is not None and val > val_unigram
        worse_train += bad_train
        worse_val += bad_val
        worse_uniform += max(train, val or 0) > uniform
        shown = f"{val:.3f} (unigram {val_unigram:.3f})" if val is not None else "-"
        print(f"seed {seed}: train-text {train:.3f} (unigram {train_unigram:.3f}), validation "
              f"{shown} nats/char, {seconds:.2f} s"
              f"{'  WORSE THAN UNIGRAM' if bad_train or bad_val else ''}", flush=True)
    print(f"{args.seeds} seeds, fastrnn train {' '.join(train_argv)}: {worse_train} end worse "
          f"than unigram on the training text, {worse_val} on validation; {worse_uniform} worse "
          f"than uniform (ln V) on either")
    return 0


if __name__ == "__main__":
    sys.exit(main())
