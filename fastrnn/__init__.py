"""fastrnn: fast character-level RNN language models (vanilla RNN, LSTM, GRU).

    import fastrnn
    text = fastrnn.load_shakespeare()
    vocab = fastrnn.Vocab.from_text(text)
    model = fastrnn.CharRNN(vocab, hidden_size=100, backend="cython")
    fastrnn.Trainer(model, vocab.encode(text), seq_length=25).fit(2000, print_every=100)
    print(model.sample_text(200, prime="ROMEO:"))
"""
__version__ = "0.1.0"

from ._optional import cuda_available
from ._threads import get_num_threads, set_num_threads
from .backends import BACKENDS, available_backends
from .data import load_shakespeare
from . import inspect
from .model import CharRNN
from .ngram import KneserNey
from .optim import SGD, Adagrad, Adam, LinearDecay, RMSprop, StepDecay, make_optimizer
from .plot import plot_history
from .trainer import Trainer, TrainResult
from .vocab import Vocab

__all__ = ["__version__", "BACKENDS", "available_backends", "cuda_available", "load_shakespeare",
           "CharRNN", "Adagrad", "SGD", "RMSprop", "Adam", "LinearDecay", "StepDecay",
           "make_optimizer",
           "Trainer", "TrainResult", "Vocab", "KneserNey", "plot_history", "set_num_threads",
           "get_num_threads"]
