"""Option names char-rnn and torch-rnn users type, for `fastrnn train` and `fastrnn sample`.

Karpathy's char-rnn (train.lua, sample.lua) and jcjohnson's torch-rnn spell their options
`-rnn_size 128`; people bring those habits along, with one or two dashes and either separator.
Where a name means what a fastrnn option means, it is accepted as a hidden alias of that option.
Where the meaning differs (or could be read two ways), the name is refused with the subcommand's
usage and what to type instead, never run with a guess. Any other unknown option is answered
with the subcommand's usage and the nearest fastrnn option names.
"""
import argparse
import difflib

# fastrnn dest -> char-rnn/torch-rnn names with the same meaning (written with underscores)
TRAIN_ALIASES = {
    "hidden_size": ("rnn_size",),
    "num_layers": ("num_layers",),
    "model": ("model", "model_type"),
    "dropout": ("dropout",),
    "seq_length": ("seq_length",),
    "batch_size": ("batch_size",),
    "epochs": ("max_epochs",),
    "lr": ("learning_rate",),
    "clip": ("grad_clip",),  # both clamp each gradient element to [-c, c]
    "val_frac": ("val_frac",),
    "init_from": ("init_from",),
    "seed": ("seed",),
    "print_every": ("print_every",),
    "eval_every": ("eval_val_every",),
    "checkpoint_dir": ("checkpoint_dir",),
    "checkpoint_every": ("checkpoint_every",),
    "lr_decay_every": ("lr_decay_every",),
    "lr_decay_factor": ("lr_decay_factor",),
}
SAMPLE_ALIASES = {
    "prime": ("primetext", "start_text"),
    "length": ("length",),
    "temperature": ("temperature",),
    "seed": ("seed",),
}

_GPU = "did you mean --backend torch --device cuda:N (fastrnn's --device cpu is the CPU)?"
_DECAY = ("char-rnn's -learning_rate_decay F multiplies the lr by F every epoch once "
          "-learning_rate_decay_after epochs have passed; fastrnn's --lr-decay-factor F (with "
          "--lr-decay-every E epochs, default 1) does so from the start: did you mean "
          "--lr-decay-factor?")
# names whose meaning differs from any one fastrnn option: (name, message)
TRAIN_REFER = {
    "learning_rate_decay": _DECAY,
    "learning_rate_decay_after": "fastrnn's decay starts at once: did you mean --lr-decay-every "
                                 "E --lr-decay-factor F (times F every E epochs)?",
    "decay_rate": "RMSprop's decay (char-rnn's -decay_rate) has no option; --optimizer rmsprop "
                  "uses 0.95, as char-rnn: did you mean --optimizer rmsprop?",
    "data_dir": "fastrnn reads one text file, not a directory of input.txt: did you mean "
                "--data DIR/input.txt?",
    "input_h5": "fastrnn reads the text itself, no preprocessing: did you mean --data FILE?",
    "input_json": "fastrnn reads the text itself, no preprocessing: did you mean --data FILE?",
    "train_frac": "the data not held out by --val-frac is trained on (no test split): did you "
                  "mean --val-frac?",
    "gpuid": _GPU, "gpu": _GPU, "opencl": _GPU, "gpu_backend": _GPU,
    "savefile": "checkpoints are latest.npz and best.npz in a directory: did you mean "
                "--checkpoint-dir?",
    "checkpoint_name": "checkpoints are latest.npz and best.npz in a directory: did you mean "
                       "--checkpoint-dir?",
    "wordvec_size": "fastrnn's input is one-hot (no embedding): did you mean --hidden-size?",
    "batchnorm": "fastrnn has no batch normalisation; see --model and --dropout",
    "rnn_type": "did you mean --model (rnn, lstm or gru)?",
}
# fastrnn 0.1's --lr-decay F held the lr for the first fraction F of the run: the same name
# and range as char-rnn's per-epoch factor, so a value is never guessed at
LR_DECAY = ("--lr-decay {value} is ambiguous: char-rnn's learning-rate decay multiplies the lr "
            "by {value} every epoch (fastrnn: --lr-decay-factor {value}), while fastrnn 0.1's "
            "--lr-decay held the lr for the first {value} of the run, then lowered it linearly "
            "(now --lr-hold {value}); give one of those")
SAMPLE_REFER = {
    "gpuid": _GPU, "gpu": _GPU, "opencl": _GPU, "gpu_backend": _GPU,
    "sample": "did you mean --greedy (char-rnn's -sample 0) or the default draws (-sample 1)?",
    "checkpoint": "give the checkpoint as the first argument: fastrnn sample FILE.npz",
    "verbose": "fastrnn sample prints only the text",
}


def spellings(name, own=()):
    """The option strings a char-rnn/torch-rnn user may type for `name` (e.g. rnn_size):
    -rnn_size, --rnn_size, --rnn-size; those in `own` (fastrnn's own) left out."""
    return [s for s in dict.fromkeys((f"-{name}", f"--{name}", f"--{name.replace('_', '-')}"))
            if s not in own]


class _Refer(argparse.Action):
    """An option refused with the subcommand's usage and `message` (its value in {value})."""

    def __init__(self, option_strings, dest, message, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        text = self.message.format(value=values if values is not None else "F")
        parser.error(text if self.message is LR_DECAY else f"{option_string}: {text}")


def add_compat(parser, aliases, refer):
    """Hidden aliases and refusals (see the module docstring) on a subcommand's parser."""
    own = set(parser._option_string_actions)
    actions = {a.dest: a for a in parser._actions}
    for dest, names in aliases.items():
        a = actions[dest]
        strings = [s for n in names for s in spellings(n, own)]
        if strings:
            parser.add_argument(*strings, dest=dest, type=a.type, choices=a.choices,
                                help=argparse.SUPPRESS)
            own.update(strings)
    for name, message in refer.items():
        strings = spellings(name, own)
        if strings:
            parser.add_argument(*strings, action=_Refer, dest=argparse.SUPPRESS,
                                message=message)
            own.update(strings)


def add_lr_decay(parser):
    """fastrnn 0.1's --lr-decay, refused (see LR_DECAY)."""
    parser.add_argument("--lr-decay", action=_Refer, dest=argparse.SUPPRESS, message=LR_DECAY)


def unknown(parser, extras):
    """Refuses `extras` (what the subcommand did not know) with its usage and the nearest
    option names it has."""
    shown = {a.dest: a.option_strings[-1] for a in parser._actions
             if a.option_strings and a.help is not argparse.SUPPRESS}
    keys = {}  # every spelling, aliases too, -> the option to name
    for s, a in parser._option_string_actions.items():
        if a.dest in shown and not isinstance(a, _Refer):
            keys[s.lstrip("-").replace("_", "-")] = shown[a.dest]
    hints = []
    for arg in extras:
        if arg.startswith("-"):
            key = arg.split("=", 1)[0].lstrip("-").replace("_", "-")
            hints += [keys[k] for k in difflib.get_close_matches(key, list(keys), n=2,
                                                                 cutoff=0.6)]
    hint = f"; did you mean {' or '.join(dict.fromkeys(hints))}?" if hints else ""
    parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
