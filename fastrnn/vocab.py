"""Character vocabulary: the sorted set of characters (or bytes) of a text."""
from __future__ import annotations

import codecs
import io
import os
import stat
from collections.abc import Iterable
from typing import Any

import numpy as np

OOV_POLICIES = ("error", "skip", "replace")
CHUNK = 1 << 20          # characters encoded (and read) at a time: bounds the temporaries
MAX_CODE = 0x110000      # code points lie in [0, MAX_CODE)


def _not_utf8_error(path):
    """The ValueError for a file that does not decode as UTF-8, naming the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(CHUNK)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                return ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte "
                                  f"{offset - pending + exc.start}); use --bytes (byte_level=True) "
                                  f"to model it byte by byte")
            if not raw:
                return ValueError(f"{path} is not UTF-8 text; use --bytes (byte_level=True) to "
                                  f"model it byte by byte")
            offset += len(raw)


def _chunks(f, path, byte_level):
    """The code points of an open binary file, CHUNK characters at a time: a uint8 array for
    bytes (byte level) or ASCII text, else uint32. Text is read as open(path, encoding="utf-8")
    reads it (universal newlines)."""
    if byte_level:
        while raw := f.read(CHUNK):
            yield np.frombuffer(raw, dtype=np.uint8)
        return
    text = io.TextIOWrapper(f, encoding="utf-8")
    try:
        while chunk := text.read(CHUNK):
            yield (np.frombuffer(chunk.encode("ascii"), dtype=np.uint8) if chunk.isascii()
                   else code_points(chunk))
    except UnicodeDecodeError as exc:
        if os.path.isfile(path):  # a regular file can be read again to find the bad byte
            raise _not_utf8_error(path) from None
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason}); use --bytes "
                         f"(byte_level=True) to model it byte by byte") from None
    finally:
        text.detach()


class _Growing:
    """A 1-D array filled by appending: capacity doubles when full, and the dtype widens
    (uint8, uint16, uint32) when appended values need it."""

    def __init__(self, dtype, capacity):
        self.a = np.empty(max(int(capacity), 1 << 16), dtype=dtype)
        self.n = 0

    def extend(self, values):
        if values.dtype.itemsize > self.a.dtype.itemsize:
            self.a = self.a.astype(values.dtype)
        end = self.n + len(values)
        if end > len(self.a):
            grown = np.empty(max(end, 2 * len(self.a)), dtype=self.a.dtype)
            grown[:self.n] = self.a[:self.n]
            self.a = grown
        self.a[self.n:end] = values
        self.n = end

    def array(self):
        return self.a[:self.n]


def read_ids(path: str | os.PathLike, byte_level: bool = False, vocab: Vocab | None = None,
             oov: str = "error") -> tuple[Vocab, np.ndarray]:
    """(vocab, ids) of a text file (or, with byte_level, any file), read once, in chunks, from
    its start to its end: a FIFO, a pipe (/dev/stdin) or a file being appended to read like a
    regular file (what was there when the read reached it). The ids are in vocab.dtype (one
    byte a character for up to 256 symbols). vocab=None builds the vocabulary from the file:
    its code points are kept meanwhile in the smallest of uint8, uint16, uint32 that holds
    them (for ASCII, encoded in place); else the file is encoded with `vocab` and the `oov`
    policy as it is read."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        hint = st.st_size if stat.S_ISREG(st.st_mode) else 0  # at most a character a byte
        if vocab is not None:
            out = _Growing(vocab.dtype, hint)
            for codes in _chunks(f, path, byte_level):
                out.extend(vocab.encode_codes(codes, oov).astype(vocab.dtype, copy=False))
            return vocab, out.array()
        # each character gets a provisional id as it first appears, renumbered in sorted
        # order at the end, in place: the ids take their final size from the start
        index = np.full(256 if byte_level else MAX_CODE, -1, dtype=np.int32)
        first_seen, known = [], 0
        kept = _Growing(np.uint8, hint)
        for codes in _chunks(f, path, byte_level):
            ids = index[codes]
            unseen = ids < 0
            if unseen.any():
                new = np.unique(codes[unseen])
                index[new] = np.arange(known, known + len(new))
                first_seen.append(new)
                known += len(new)
                ids = index[codes]
            kept.extend(ids.astype(ids_dtype_for(known)))
    if not first_seen:
        raise ValueError(f"{path} is empty: there is no text to build a vocabulary from")
    codes = np.concatenate(first_seen)  # provisional id -> code point
    order = np.argsort(codes)
    vocab = Vocab(from_code_points(codes[order]), byte_level=byte_level)
    rank = np.empty(len(codes), dtype=vocab.dtype)
    rank[order] = np.arange(len(codes))
    ids = kept.array()
    for i in range(0, len(ids), CHUNK):
        ids[i:i + CHUNK] = rank[ids[i:i + CHUNK]]
    return vocab, ids


def ids_dtype_for(n):
    """The smallest unsigned type that holds ids 0..n-1 (Vocab.dtype of n characters)."""
    return np.uint8 if n <= 256 else np.uint16 if n <= 65536 else np.uint32


def read_text(path: str | os.PathLike, byte_level: bool = False) -> str:
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

    def __init__(self, chars: str | Iterable[str], byte_level: bool = False) -> None:
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
        self._byte_table = None

    @classmethod
    def from_text(cls, text: str, byte_level: bool = False) -> Vocab:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return cls("".join(sorted(set(text))), byte_level=byte_level)

    def to_bytes(self, text: str) -> bytes:
        """How `text` is written to a file: its bytes (byte level) or UTF-8."""
        return text.encode("latin-1" if self.byte_level else "utf-8")

    def byte_lengths(self) -> np.ndarray:
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
    def dtype(self) -> type:
        """The smallest unsigned integer type that holds every id."""
        return np.uint8 if len(self) <= 256 else np.uint16 if len(self) <= 65536 else np.uint32

    def replacement_id(self) -> int:
        """The id `encode(..., oov="replace")` puts for unknown characters: U+FFFD, else '?',
        else ' ', if in the vocabulary, else id 0."""
        for c in ("\ufffd", "?", " "):
            i = self.chars.find(c)
            if i >= 0:
                return i
        return 0

    def encode(self, text: str, oov: str = "error", dtype: Any = np.int32) -> np.ndarray:
        """Ids of the characters of `text` as an array of `dtype` (int32 by default; self.dtype
        takes one byte a character up to 256 symbols). Characters not in the vocabulary raise
        (oov="error"), are dropped ("skip") or become replacement_id() ("replace"). Long texts
        are encoded in chunks, so the temporaries stay small."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if oov not in OOV_POLICIES:
            raise ValueError(f"oov must be one of {', '.join(OOV_POLICIES)}, got {oov!r}")
        if np.iinfo(dtype).max < len(self) - 1:
            raise ValueError(f"dtype {np.dtype(dtype).name} cannot hold ids up to {len(self) - 1}")
        if len(text) <= CHUNK:
            return self.encode_codes(code_points(text), oov).astype(dtype)
        out = np.empty(len(text), dtype=dtype)
        n = 0
        for i in range(0, len(text), CHUNK):
            ids = self.encode_codes(code_points(text[i:i + CHUNK]), oov)
            out[n:n + len(ids)] = ids
            n += len(ids)
        return out[:n]

    def encode_codes(self, codes: np.ndarray, oov: str = "error") -> np.ndarray:
        """Ids (an integer array) of an array of code points (see `encode`)."""
        if oov not in OOV_POLICIES:
            raise ValueError(f"oov must be one of {', '.join(OOV_POLICIES)}, got {oov!r}")
        if codes.dtype == np.uint8:  # bytes or ASCII: one lookup
            if self._byte_table is None:
                table = np.full(256, -1, dtype=np.int16 if len(self) <= 32767 else np.int32)
                small = self._codes[self._codes < 256]
                table[small] = np.searchsorted(self._codes, small)
                self._byte_table = table
            ids = self._byte_table[codes]
            bad = ids < 0
        else:
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
                                 f"vocabulary, among them {missing!r} (see the oov option, "
                                 f"--oov on the command line: skip or replace them)")
        return ids

    def decode(self, ids: Any) -> str:
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
