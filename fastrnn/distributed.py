"""Data-parallel training on the torch backend with torch.distributed, launched by torchrun:

    torchrun --standalone --nproc-per-node=4 -m fastrnn.distributed --data input.txt \\
        --hidden-size 512 --seq-length 50 --batch-size 32 --iterations 20000 --checkpoint m.npz

With N ranks and --batch-size B (per rank) the corpus is split into N*B streams, exactly as a
single process with batch_size=N*B splits it, and rank r trains on streams r*B .. r*B+B-1. Each
iteration one all_reduce sums the flat gradients and the loss over the ranks (the loss is summed
over tokens, so the sum of the ranks' gradients is the gradient of the whole batch; with
reduction="mean" every rank scales it by 1/(tokens over all ranks)); then every rank applies the
same optimizer update, so the replicas stay identical and a step equals one step of that single
process. Rank 0 alone prints and writes checkpoints. On CUDA each rank takes
cuda:LOCAL_RANK and NCCL; on the CPU the ranks use gloo.
"""
import argparse
import os
import sys

import numpy as np

from ._optional import cuda_available, require_torch
from .data import load_shakespeare
from .model import CharRNN, check_positive_int
from ._train_cli import optimizer_from_args
from .optim import OPTIMIZERS
from .trainer import Trainer
from .vocab import Vocab

torch = require_torch("fastrnn.distributed")
dist = torch.distributed


class DistributedTrainer(Trainer):
    """A Trainer for one rank of an initialised default process group; batch_size is per rank.

    It walks the data of a Trainer with batch_size = world_size * batch_size and trains on this
    rank's rows of each chunk (only those rows of the carried state are this rank's, and of the
    dropout masks, which every rank draws alike for the whole batch); train steps return the
    loss summed over all ranks. reset and reduction are the Trainer's.
    """

    def __init__(self, model, ids, *, seq_length=25, batch_size=1, optimizer=None,
                 reset="wrap", reduction="sum"):
        if model.backend != "torch":
            raise ValueError(f"distributed training needs backend='torch', not {model.backend!r}")
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: launch with torchrun and "
                               "call fastrnn.distributed.setup() first")
        B = check_positive_int(batch_size, "batch_size")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        super().__init__(model, ids, seq_length=seq_length, batch_size=self.world_size * B,
                         optimizer=optimizer, reset=reset, reduction=reduction)
        self.rows = slice(self.rank * B, (self.rank + 1) * B)
        backend = model._backend
        opt = self.optimizer
        for tensor in (backend.flat, *(opt.state[name] for name in opt.state_names)):
            dist.broadcast(tensor, src=0)  # every replica starts from rank 0's
        backend.reduce_grads = dist.all_reduce

    def _train_chunk(self, x, y, grad_scale, masks=None):
        """Trains on this rank's rows of the whole chunk (and of its dropout masks (L-1,B,T,H));
        grad_scale is the whole chunk's (the gradients are summed over the ranks before it
        applies). Returns (the summed loss of all ranks, True): data-parallel steps are not
        guarded against a non-finite update."""
        r = self.rows
        if masks is not None:
            masks = masks[:, r]
        return self.model._backend.train_step(x[r], y[r], rows_of(self.h, r, self.model.spec),
                                              self.optimizer, grad_scale, masks=masks), True


def rows_of(state, rows, spec):
    """Rows `rows` of a carried state, as views in the form the backends take (so their in-place
    update lands in the carried state): (B,H)[rows] for min-char-rnn's model (also when it is
    carried as (1,B,H), alone or in a tuple), else a tuple of (L,B,H)[:, rows]."""
    parts = state if isinstance(state, tuple) else (state,)
    if spec.legacy:
        h = parts[0]
        return h[rows] if h.ndim == 2 else h[0, rows]
    if any(not isinstance(a, np.ndarray) or a.ndim != 3 for a in parts):
        raise ValueError(f"a {spec.describe()} carries (L,B,H) states; got shapes "
                         f"{[np.shape(a) for a in parts]}")
    return tuple(a[:, rows] for a in parts)


def setup(device="auto"):
    """Joins the process group that torchrun describes in the environment; returns this rank's
    device: cuda:LOCAL_RANK (NCCL) when CUDA is used, else "cpu" (gloo)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("fastrnn.distributed runs under torchrun, e.g. `torchrun --standalone "
                           "--nproc-per-node=2 -m fastrnn.distributed ...`")
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"
    if device == "cuda":
        if not cuda_available():
            raise ValueError("device='cuda' but CUDA is not usable here")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return device


def build_parser():
    parser = argparse.ArgumentParser(prog="torchrun ... -m fastrnn.distributed",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="UTF-8 text file (default: the built-in Shakespeare)")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--hidden-size", type=int, default=100)
    parser.add_argument("--model", default="rnn", choices=["rnn", "lstm", "gru"], help="cell")
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--nonlinearity", default="tanh", choices=["tanh", "relu"])
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=1, help="streams per rank")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--optimizer", default="adagrad", choices=list(OPTIMIZERS))
    parser.add_argument("--lr", type=float, help="default: the optimizer's (Adagrad: 0.1)")
    parser.add_argument("--clip", type=float,
                        help="elementwise clip (0: off; default: the optimizer's, Adagrad: 5)")
    parser.add_argument("--clip-norm", type=float,
                        help="global-norm clip (0: off; default: the optimizer's)")
    parser.add_argument("--reduction", default="sum", choices=["sum", "mean"],
                        help="loss over the tokens of all ranks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--print-every", type=int, default=500)
    parser.add_argument("--checkpoint", help="model file written by rank 0 (CharRNN.load reads it)")
    parser.add_argument("--checkpoint-every", type=int, default=0)
    return parser


def train(args):
    device = setup(args.device)
    rank = dist.get_rank()
    try:
        if args.data:
            with open(args.data, encoding="utf-8") as f:
                text = f.read()
        else:
            text = load_shakespeare()
        vocab = Vocab.from_text(text)
        model = CharRNN(vocab, args.hidden_size, cell=args.model, num_layers=args.num_layers,
                        dropout=args.dropout, nonlinearity=args.nonlinearity, backend="torch",
                        device=device, dtype=args.dtype, seed=args.seed)
        trainer = DistributedTrainer(model, vocab.encode(text), seq_length=args.seq_length,
                                     batch_size=args.batch_size, reduction=args.reduction,
                                     optimizer=optimizer_from_args(args, model,
                                                                   args.optimizer))

        def save(trainer, loss):
            if args.checkpoint and args.checkpoint_every and \
                    trainer.iteration % args.checkpoint_every == 0:
                model.save(args.checkpoint)

        if rank == 0:
            print(f"fastrnn.distributed: {trainer.world_size} ranks x {args.batch_size} streams; "
                  f"{model}, {trainer.optimizer!r}", flush=True)
        result = trainer.fit(args.iterations, print_every=args.print_every if rank == 0 else 0,
                             callback=save if rank == 0 else None)
        if rank == 0:
            print(f"{result.iterations} iterations in {result.seconds:.1f} s "
                  f"({result.chars_per_sec:,.0f} chars/s over all ranks); "
                  f"smooth loss {result.smooth_loss:.3f}", flush=True)
            if args.checkpoint:
                model.save(args.checkpoint)
    finally:
        dist.destroy_process_group()
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        rank = os.environ.get("RANK", "?")
        print(f"fastrnn.distributed (rank {rank}): error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
