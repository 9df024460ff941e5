"""Character vocabulary: the sorted set of characters (or bytes) of a text."""
import numpy as np

OOV_POLICIES = ("error", "skip", "replace")


def read_text(path, byte_level=False):
    """A file's contents as str: UTF-8 text, or with byte_level each byte as the character of
    the same number (latin-1), so that any file can be modelled."""
    if byte_level:
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         f"use --bytes to model it byte by byte") from None


def code_points(text):
    """The code points of a str as a little-endian uint32 array. Lone surrogates (what
    errors="surrogateescape" makes of undecodable bytes) are code points like any other."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def from_code_points(codes):
    """The str of an array of code points (the inverse of `code_points`)."""
    return np.asarray(codes, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


class Vocab:
    """Maps characters to ids 0..V-1 in sorted (code point) order, as min-char-rnn does.

    A byte-level vocabulary (byte_level=True) holds characters U+0000..U+00FF standing for the
    bytes of the same value (see read_text); its text is written out as those bytes.
    """

    def __init__(self, chars, byte_level=False):
        chars = "".join(chars) if not isinstance(chars, str) else chars
        if len(chars) == 0:
            raise ValueError("a vocabulary needs at least one character (is the text empty?)")
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise ValueError("Vocab(chars) takes distinct characters in sorted order; "
                             "use Vocab.from_text(text) to build one from any text")
        if byte_level and ord(chars[-1]) > 255:
            raise ValueError("a byte-level vocabulary holds only characters U+0000..U+00FF")
        self.chars = chars
        self.byte_level = bool(byte_level)
        self._codes = code_points(chars)

    @classmethod
    def from_text(cls, text, byte_level=False):
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return cls("".join(sorted(set(text))), byte_level=byte_level)

    def to_bytes(self, text):
        """How `text` is written to a file: its bytes (byte level) or UTF-8."""
        return text.encode("latin-1" if self.byte_level else "utf-8")

    def byte_lengths(self):
        """Bytes each id stands for in the original file (1 at byte level; else UTF-8 length)."""
        return np.array([len(self.to_bytes(c)) for c in self.chars], dtype=np.int64)

    def __len__(self):
        return len(self.chars)

    def __eq__(self, other):
        return (isinstance(other, Vocab) and other.chars == self.chars
                and other.byte_level == self.byte_level)

    def __repr__(self):
        return f"Vocab({len(self)} chars: {self.chars[:40]!r}{'...' if len(self) > 40 else ''})"

    @property
    def dtype(self):
        """The smallest unsigned integer type that holds every id."""
        return np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32

    def replacement_id(self):
        """The id `encode(..., oov="replace")` puts for unknown characters: U+FFFD, else '?',
        else ' ', if in the vocabulary, else id 0."""
        for c in ("\ufffd", "?", " "):
            i = self.chars.find(c)
            if i >= 0:
                return i
        return 0

    def encode(self, text, oov="error"):
        """Ids of the characters of `text` as an int32 array. Characters not in the vocabulary
        raise (oov="error"), are dropped ("skip") or become replacement_id() ("replace")."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if oov not in OOV_POLICIES:
            raise ValueError(f"oov must be one of {', '.join(OOV_POLICIES)}, got {oov!r}")
        codes = code_points(text)
        ids = np.searchsorted(self._codes, codes)
        ids[ids == len(self)] = 0
        bad = self._codes[ids] != codes
        if bad.any():
            if oov == "skip":
                ids = ids[~bad]
            elif oov == "replace":
                ids[bad] = self.replacement_id()
            else:
                missing = "".join(chr(c) for c in np.unique(codes[bad])[:20].tolist())
                raise ValueError(f"text holds {int(bad.sum())} character(s) not in the "
                                 f"vocabulary, among them {missing!r} (see the oov option: "
                                 f"skip or replace them)")
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
