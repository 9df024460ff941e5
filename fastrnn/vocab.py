"""Character vocabulary: the sorted set of characters of a text."""
import numpy as np


def code_points(text):
    """The code points of a str as a little-endian uint32 array. Lone surrogates (what
    errors="surrogateescape" makes of undecodable bytes) are code points like any other."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def from_code_points(codes):
    """The str of an array of code points (the inverse of `code_points`)."""
    return np.asarray(codes, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Vocab:
    """Maps characters to ids 0..V-1 in sorted (code point) order, as min-char-rnn does."""

    def __init__(self, chars):
        chars = "".join(chars) if not isinstance(chars, str) else chars
        if len(chars) == 0:
            raise ValueError("a vocabulary needs at least one character (is the text empty?)")
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("Vocab(chars) takes distinct characters in sorted order; "
                             "use Vocab.from_text(text) to build one from any text")
        self.chars = chars
        self._codes = code_points(chars)

    @classmethod
    def from_text(cls, text):
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return cls("".join(sorted(set(text))))

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return isinstance(other, Vocab) and other.chars == self.chars

    def __repr__(self):
        return f"Vocab({len(self)} chars: {self.chars[:40]!r}{'...' if len(self) > 40 else ''})"

    @property
    def dtype(self):
        """The smallest unsigned integer type that holds every id."""
        return np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32

    def encode(self, text):
        """Ids of the characters of `text` as an int32 array; unknown characters raise."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        codes = code_points(text)
        ids = np.searchsorted(self._codes, codes)
        ids[ids == len(self)] = 0
        bad = self._codes[ids] != codes
        if bad.any():
            missing = "".join(chr(c) for c in np.unique(codes[bad])[:20].tolist())
            raise ValueError(f"text holds {int(bad.sum())} character(s) not in the vocabulary, "
                             f"among them {missing!r}")
        return ids.astype(np.int32)

    def decode(self, ids):
        """The text of a sequence of ids."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"decode takes a 1-D sequence of integer ids, got shape {ids.shape} "
                             f"dtype {ids.dtype}")
        if ids.min() < 0 or ids.max() >= len(self):
            raise ValueError(f"ids must lie in [0, {len(self)}), got range "
                             f"[{ids.min()}, {ids.max()}]")
        return from_code_points(self._codes[ids])
