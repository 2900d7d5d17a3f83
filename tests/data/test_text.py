"""Tests of tfconv.text: aclImdb-layout fixture, the real Rotten Tomatoes file, the embedding."""

from __future__ import annotations

import bz2
import hashlib

import numpy as np
import pytest

from tfconv.data import text
from tfconv.data.integrity import DataIntegrityError


@pytest.fixture(scope="module")
def rt():
    return text.load_rotten_tomatoes()


def _imdb_fixture(root):
    reviews = {
        ("train", "pos"): {"1_9.txt": "Great film!<br /><br />Loved it.", "0_10.txt": "A masterpiece."},
        ("train", "neg"): {"3_1.txt": "Awful.", "2_2.txt": "Boring, too long.", "10_3.txt": "Meh"},
        ("test", "pos"): {"0_8.txt": "Nice."},
        ("test", "neg"): {"0_2.txt": "Bad."},
    }
    for (split, sub), files in reviews.items():
        folder = root / "aclImdb" / split / sub
        folder.mkdir(parents=True)
        for name, body in files.items():
            (folder / name).write_text(body, encoding="utf-8")
    (root / "aclImdb" / "train" / "urls_pos.txt").write_text("http://x\n")
    return root / "aclImdb"


def test_load_imdb_fixture(tmp_path):
    root = _imdb_fixture(tmp_path)
    texts, labels = text.load_imdb(root, "train")
    # neg first then pos, each folder in sorted file-name order
    assert texts == ["Meh", "Boring, too long.", "Awful.", "A masterpiece.", "Great film!<br /><br />Loved it."]
    assert labels.tolist() == [0, 0, 0, 1, 1] and labels.dtype == np.int64
    texts, labels = text.load_imdb(root, "test")
    assert texts == ["Bad.", "Nice."] and labels.tolist() == [0, 1]
    data = text.make_text("imdb", 4, d_s=3, d=8, path=root)
    assert data["X"].shape == (4, 3, 8) and data["y"].shape == (4, 1)
    assert sorted(data["y"][:, 0].tolist()) == [-1.0, -1.0, 1.0, 1.0]
    assert np.array_equal(data["y"][:, 0] == 1.0, data["labels"] == 1)


def test_load_imdb_missing_folder(tmp_path):
    root = _imdb_fixture(tmp_path)
    for f in (root / "test" / "pos").iterdir():
        f.unlink()
    (root / "test" / "pos").rmdir()
    with pytest.raises(FileNotFoundError) as err:
        text.load_imdb(root, "test")
    assert str(root / "test" / "pos") in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        text.load_imdb(tmp_path / "nowhere")


def test_rotten_tomatoes_real_file(rt):
    texts, labels = rt
    counts = np.bincount(labels, minlength=2)
    print(f"rotten tomatoes: {len(texts)} rows, rotten(0)={counts[0]}, fresh(1)={counts[1]}")
    assert len(texts) == len(labels) == 12_808 == text.ROTTEN_TOMATOES_ROWS
    assert counts.tolist() == [5405, 7403]
    assert all(t.strip() for t in texts)
    path = text._rotten_tomatoes_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == text.ROTTEN_TOMATOES_SHA256


def test_rotten_tomatoes_tampered_refused(tmp_path):
    raw = bz2.decompress(text._rotten_tomatoes_file().read_bytes())
    bad = tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    bad.write_bytes(bz2.compress(raw.replace(b"rotten", b"fresh", 1)))
    with pytest.raises(DataIntegrityError) as err:
        text.load_rotten_tomatoes(path=bad)
    assert str(bad) in str(err.value) and text.ROTTEN_TOMATOES_SHA256 in str(err.value)
    texts, labels = text.load_rotten_tomatoes(path=bad, verify=False)  # parses when asked to
    assert len(texts) == 12_808


def test_tokenize():
    assert text.tokenize("It's GREAT!<br />10/10, don't miss") == ["it's", "great", "10", "10", "don't", "miss"]


def test_embedding_deterministic_and_independent():
    a = ["the movie was great", "awful acting", ""]
    X = text.embed_texts(a, d_s=6, d=16, seed=0)
    assert X.shape == (3, 6, 16) and X.dtype == np.float64
    norms = np.linalg.norm(X, axis=-1)
    assert np.allclose(norms[0, :4], 1.0) and np.all(norms[0, 4:] == 0)
    assert np.allclose(norms[1, :2], 1.0) and np.all(norms[1, 2:] == 0) and np.all(norms[2] == 0)
    assert np.array_equal(X, text.embed_texts(a, d_s=6, d=16, seed=0))
    # independent of the other texts in the batch and of their order
    alone = text.embed_texts(["awful acting"], d_s=6, d=16, seed=0)
    other = text.embed_texts(["zzz unseen words", "awful acting", "the movie"], d_s=6, d=16, seed=0)
    assert np.array_equal(alone[0], X[1]) and np.array_equal(other[1], X[1])
    # same word -> same vector wherever it appears; seed changes vectors
    assert np.array_equal(other[2, 0], X[0, 0])
    assert not np.allclose(text.embed_texts(a, 6, 16, seed=1)[0], X[0])
    # token_norm and truncation
    Y = text.embed_texts(a, d_s=2, d=16, seed=0, token_norm=3.0)
    assert Y.shape == (3, 2, 16) and np.allclose(np.linalg.norm(Y[0], axis=-1), 3.0)
    assert np.allclose(Y[0] / 3.0, X[0, :2])
    raw = text.embed_texts(a, d_s=6, d=16, seed=0, token_norm=None)
    assert np.array_equal(raw[0, 0], text.word_vector("the", 16, 0))


def test_make_text_rotten_tomatoes():
    data = text.make_text("rotten_tomatoes", 50, d_s=8, d=32, seed=0)
    X, y = data["X"], data["y"]
    assert X.shape == (50, 8, 32) and y.shape == (50, 1) and y.dtype == np.float64
    assert sorted(set(y[:, 0].tolist())) == [-1.0, 1.0] and y.sum() == 0
    norms = np.linalg.norm(X, axis=-1)
    assert np.all(np.isclose(norms, 1.0) | (norms == 0))
    assert data["meta"]["file_sha256"] == text.ROTTEN_TOMATOES_SHA256
    again = text.make_text("rotten_tomatoes", 50, d_s=8, d=32, seed=0)
    assert np.array_equal(again["X"], X) and np.array_equal(again["index"], data["index"])
    bigger = text.make_text("rotten_tomatoes", 100, d_s=8, d=32, seed=0)
    assert set(data["index"].tolist()) <= set(bigger["index"].tolist())
    with pytest.raises(ValueError, match="source"):
        text.make_text("sst2", 10, 4, 4)


def test_word_vector_golden_values():
    # guards the embedding's reproducibility across machines and numpy releases
    np.testing.assert_allclose(
        text.word_vector("movie", 4, 0),
        [-0.6155582355642059, 0.11589932262957696, -0.6373727798820843, 0.3282639613373276],
        rtol=0,
        atol=1e-15,
    )
    np.testing.assert_allclose(
        text.word_vector("movie", 4, 1),
        [1.5404395524634387, 0.0593068184761449, 0.12740668741636058, -0.8371365797812597],
        rtol=0,
        atol=1e-15,
    )
    assert not text.word_vector("movie", 4, 0).flags.writeable


def test_bz2_bomb_is_refused_with_the_file_name(tmp_path):
    """Decompression of a user's review corpus is capped (verify=False skips the pinned hash)."""
    import time

    bomb = tmp_path / "reviews.csv.bz2"
    bomb.write_bytes(bz2.compress(b"category,text\n" + bytes(300 * 1024 * 1024), 9))
    assert bomb.stat().st_size < 1_000
    t0 = time.time()
    with pytest.raises(ValueError) as err:
        text.load_rotten_tomatoes(bomb, verify=False)
    assert time.time() - t0 < 10
    assert str(bomb) in str(err.value) and "decompresses to more than 268,435,456 bytes" in str(err.value)
    # control: a small corpus of the same form loads
    ok = tmp_path / "ok.csv.bz2"
    ok.write_bytes(bz2.compress(b"category,text\nfresh,Great\nrotten,Bad\n"))
    texts, labels = text.load_rotten_tomatoes(ok, verify=False)
    assert texts == ["Great", "Bad"] and list(labels) == [1, 0]


def test_review_subset_takes_every_usable_review_nested(rt):
    """config/paper.yaml's reviews: n_samples = 12,808 is every usable review (each once); subsets stay
    class-balanced up to twice the smaller class (10,810) and nested beyond it; more is refused, naming
    the allowed range."""
    _, labels = rt
    labels = np.asarray(labels)
    full = text.review_subset(labels, 12_808, seed=0)
    assert np.array_equal(np.sort(full), np.arange(12_808))
    bal = text.review_subset(labels, 10_810, seed=0)
    assert np.bincount(labels[bal]).tolist() == [5405, 5405]
    small = text.review_subset(labels, 512, seed=0)
    assert np.bincount(labels[small]).tolist() == [256, 256]
    mid = text.review_subset(labels, 12_000, seed=0)
    assert len(set(mid.tolist())) == 12_000
    assert set(small.tolist()) <= set(bal.tolist()) <= set(mid.tolist()) <= set(full.tolist())
    assert np.bincount(labels[mid]).tolist() == [5405, 12_000 - 5405]
    with pytest.raises(ValueError, match=r"12,809 exceeds the 12,808 usable reviews.*allowed: 1\.\.12,808"):
        text.review_subset(labels, 12_809, seed=0)


def test_distinct_keeps_the_first_of_identical_inputs_and_then_no_two_inputs_are_equal(rt):
    """Rotten Tomatoes repeats reviews; two identical inputs make K_0 exactly singular.  `distinct_inputs`
    keeps the first of each group of equal first-d_s-word sequences (checked here by embedding: no two rows
    of X equal), and make_text(distinct=True) records how many it dropped."""
    texts, _ = rt
    keep = text.distinct_inputs(["a b c", "a b d", "a b c x", "A, b c"], d_s=3)
    assert keep.tolist() == [0, 1]  # "a b c x" and "A, b c" equal "a b c" in their first 3 words
    full = text.make_text("rotten_tomatoes", 4096, d_s=16, d=8, seed=0)
    flat = full["X"].reshape(len(full["X"]), -1)
    assert len(np.unique(flat, axis=0)) < len(flat)  # the raw corpus has equal inputs at N = 4,096
    dist = text.make_text("rotten_tomatoes", 4096, d_s=16, d=8, seed=0, distinct=True)
    flat = dist["X"].reshape(len(dist["X"]), -1)
    assert len(np.unique(flat, axis=0)) == len(flat) == 4096
    m = dist["meta"]
    assert m["distinct"] and m["n_loaded"] == len(texts) == 12_808
    assert m["n_available"] == 12_808 - m["n_repeated_dropped"] and m["n_repeated_dropped"] > 0
