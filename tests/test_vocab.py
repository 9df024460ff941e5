import numpy as np
import pytest

import fastrnn


def test_sorted_vocab_and_round_trip():
    text = "the quick brown fox, ÆØÅ and 漢字 too\n"
    v = fastrnn.Vocab.from_text(text)
    assert v.chars == "".join(sorted(set(text))) and len(v) == len(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert [v.chars[i] for i in ids] == list(text)
    assert fastrnn.Vocab(v.chars) == v


def test_encode_rejects_unknown_characters_and_bad_types():
    v = fastrnn.Vocab.from_text("abc")
    with pytest.raises(ValueError, match="not in the vocabulary.*'z'"):
        v.encode("abz")
    with pytest.raises(TypeError):
        v.encode(b"abc")
    with pytest.raises(ValueError, match="ids must lie in"):
        v.decode([0, 3])
    with pytest.raises(ValueError, match="at least one character"):
        fastrnn.Vocab.from_text("")
    with pytest.raises(ValueError, match="sorted"):
        fastrnn.Vocab("ba")
    assert v.encode("") .shape == (0,) and v.decode([]) == ""


def test_builtin_corpus_is_the_shipped_shakespeare(shakespeare):
    text = fastrnn.load_shakespeare()
    assert len(text) == 1099961 and text == shakespeare
    assert len(fastrnn.Vocab.from_text(text)) == 77


def test_any_python_str_round_trips_lone_surrogates_included(tmp_path):
    """Text read with errors="surrogateescape" holds lone surrogates for undecodable bytes;
    they are characters like any other, through encode/decode and a checkpoint."""
    raw = b"caf\xe9 ok \xff\xfe\n"  # Latin-1 bytes, not UTF-8
    text = raw.decode("utf-8", errors="surrogateescape")
    v = fastrnn.Vocab.from_text(text)
    assert "\udce9" in v.chars and "\udcff" in v.chars
    assert v.decode(v.encode(text)) == text
    assert v.decode(v.encode(text)).encode("utf-8", errors="surrogateescape") == raw
    model = fastrnn.CharRNN(v, 4, backend="numpy")
    model.save(tmp_path / "m.npz")
    assert fastrnn.CharRNN.load(tmp_path / "m.npz", backend="numpy").vocab == v
