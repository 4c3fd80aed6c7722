"""Embedders: the real all-MiniLM-L6-v2, OpenAI against a local fake, the hashing one, the cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from autoforge_data.errors import AfdbError, AuthError, ConfigError, InvalidInput, Unavailable
from autoforge_data.settings import Settings
from autoforge_data.vector import embedders
from autoforge_data.vector.embedders import (
    KNOWN_MODELS,
    CachedEmbedder,
    FloatArray,
    HashEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    RetryPolicy,
    content_hash,
    embed_many,
    make_embedder,
    minilm_model_dir,
)
from fake_openai import FakeOpenAI, Fault
from servers import free_port

BAD_INPUTS: list[Any] = [[], [""], ["ok", "   \n\t"], "a single string", ["ok", None]]


def unit_rows(v: FloatArray) -> bool:
    """Every row has length 1 (float32 precision)."""
    return bool(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5))


# --- all-MiniLM-L6-v2 (the real model) ----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    """One loaded MiniLM for the module (loading costs seconds)."""
    embedder = MiniLMEmbedder(batch_size=16)
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture(scope="module")
def raw_model() -> Any:
    """sentence-transformers' own model from the same bundled folder, the reference."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_model_dir()), device="cpu", local_files_only=True)


def test_minilm_shape_dtype_and_unit_rows(minilm: MiniLMEmbedder) -> None:
    """(n, 384) float32, C-contiguous, unit rows, and the attributes the registry relies on."""
    v = minilm.embed(["first text", "second, longer text about prompts", "third"])
    assert v.shape == (3, 384) and v.dtype == np.float32 and v.flags.c_contiguous
    assert unit_rows(v)
    spec = KNOWN_MODELS[minilm.name]
    assert (spec.dimension, spec.metric, spec.normalized) == (384, "cosine", True)


def test_minilm_matches_raw_sentence_transformers(minilm: MiniLMEmbedder, raw_model: Any) -> None:
    """Each row has cosine >= 0.9999 with raw encode(normalize_embeddings=True)."""
    texts = [
        "How do I reset my password?",
        "Résumé of a naïve café owner — ünïcödé and emoji 🚀",
        "short",
        "a long passage " * 200,  # past the 256-token limit: truncated the same way
        "Write a SQL query that returns the ten most recent prompts per owner.",
    ]
    ours = minilm.embed(texts)
    raw = raw_model.encode(texts, batch_size=16, normalize_embeddings=True)
    cosine = np.sum(ours * raw, axis=1) / np.linalg.norm(raw, axis=1)
    assert cosine.min() >= 0.9999


def test_minilm_semantic_sanity(minilm: MiniLMEmbedder) -> None:
    """A password question is closer to password steps than to a banana bread recipe."""
    q, near, far = minilm.embed(
        [
            "How do I reset my password?",
            "Steps to change a forgotten password",
            "Recipe for banana bread",
        ]
    )
    assert float(q @ near) > float(q @ far) + 0.2


@pytest.mark.parametrize("texts", BAD_INPUTS)
def test_minilm_rejects_empty_input_before_loading(texts: Any) -> None:
    """Empty list, empty or whitespace text, a bare string, a non-string: InvalidInput, no load."""
    embedder = MiniLMEmbedder()
    with pytest.raises(InvalidInput) as info:
        embedder.embed(texts)
    assert not embedder.loaded
    assert info.value.hint or "text" in info.value.message


def test_minilm_loads_once_under_concurrency(
    monkeypatch: pytest.MonkeyPatch, raw_model: Any
) -> None:
    """Eight threads embedding at once on a fresh embedder load the model exactly once."""
    loads: list[Path] = []

    def fake_load(folder: Path, threads: int | None) -> Any:
        loads.append(folder)
        time.sleep(0.2)  # widen the race window
        return raw_model

    monkeypatch.setattr(embedders, "_load_sentence_transformer", fake_load)
    embedder = MiniLMEmbedder()
    texts = [[f"text number {i}", "shared text"] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(embedder.embed, texts))
    assert len(loads) == 1
    for r in results:
        np.testing.assert_allclose(r[1], results[0][1], atol=1e-5)


def test_minilm_rejects_nan_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that returns NaN is an error naming the bad text, not a silent bad vector."""

    class NaNModel:
        def encode(self, texts: list[str], **kw: Any) -> FloatArray:
            out = np.ones((len(texts), 384), dtype=np.float32)
            out[1, 7] = np.nan
            return out

    monkeypatch.setattr(embedders, "_load_sentence_transformer", lambda f, t: NaNModel())
    with pytest.raises(Unavailable, match=r"NaN or infinite values \(text 1\)"):
        MiniLMEmbedder().embed(["a", "b", "c"])


def _no_network_prefix() -> list[str]:
    """`unshare -n` (a network namespace with no interfaces up) when we may use it."""
    unshare = shutil.which("unshare")
    if (
        unshare
        and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode
        == 0
    ):
        return [unshare, "-n"]
    return []


def test_minilm_loads_offline_without_network(tmp_path: Path) -> None:
    """In a process with no network and an empty HF cache, the model loads and embeds."""
    script = (
        "import os, json\n"
        "from autoforge_data.vector.embedders import MiniLMEmbedder\n"
        "v = MiniLMEmbedder().embed(['offline works'])\n"
        "print(json.dumps([list(v.shape), os.environ['HF_HUB_OFFLINE']]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HTTPS_PROXY": "http://127.0.0.1:9"}
    env |= {"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    cmd = [*_no_network_prefix(), sys.executable, "-c", script]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [[1, 384], "1"]
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


# --- OpenAI against the local fake --------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server for the test."""
    with FakeOpenAI() as server:
        yield server


def openai(fake: FakeOpenAI, **kw: Any) -> OpenAIEmbedder:
    """An embedder on the fake with fast, recorded backoff (no real sleeping)."""
    options: dict[str, Any] = {
        "base_url": fake.url,
        "timeout": 2.0,
        "retry": RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05),
    }
    return OpenAIEmbedder(SecretStr(fake.api_key), **(options | kw))


def expected(fake: FakeOpenAI, texts: Sequence[str]) -> FloatArray:
    """What the fake returns for ``texts``, row by row."""
    return np.stack([fake.vector(t) for t in texts])


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_openai_batches_and_orders_by_index(fake: FakeOpenAI, encoding: Any) -> None:
    """5 inputs, cap 2: 3 requests of 2, 2, 1; rows in input order though the fake shuffles."""
    texts = [f"prompt number {i}" for i in range(5)]
    with openai(fake, batch_size=2, encoding_format=encoding) as emb:
        v = emb.embed(texts)
    assert [r.inputs for r in fake.requests] == [texts[0:2], texts[2:4], texts[4:5]]
    first = fake.requests[0]
    assert first.body["model"] == "text-embedding-3-small"
    assert first.body["encoding_format"] == encoding
    assert first.authorization == f"Bearer {fake.api_key}"
    assert v.shape == (5, 1536) and v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(v, expected(fake, texts), atol=1e-6)
    assert unit_rows(v)


def test_openai_honours_retry_after_on_429(fake: FakeOpenAI) -> None:
    """A 429 with Retry-After: 1 waits 1 s (not the tiny backoff), then succeeds."""
    sleeps: list[float] = []
    fake.fail(Fault(429, headers={"Retry-After": "1"}))
    v = openai(fake, sleep=sleeps.append).embed(["hello"])
    assert sleeps == [1.0] and len(fake.requests) == 2
    np.testing.assert_allclose(v, expected(fake, ["hello"]), atol=1e-6)


def test_openai_honours_retry_after_ms(fake: FakeOpenAI) -> None:
    """OpenAI's retry-after-ms header is read in milliseconds."""
    sleeps: list[float] = []
    fake.fail(Fault(429, headers={"retry-after-ms": "250"}))
    openai(fake, sleep=sleeps.append).embed(["hello"])
    assert sleeps == [0.25]


def test_openai_retry_after_beyond_cap_gives_up(fake: FakeOpenAI) -> None:
    """A Retry-After longer than the policy allows fails now instead of burning attempts."""
    fake.fail(Fault(429, headers={"Retry-After": "3600"}))
    with pytest.raises(Unavailable, match="HTTP 429, asked to retry after 3600 s"):
        openai(fake).embed(["hello"])
    assert len(fake.requests) == 1


def test_openai_retries_5xx_with_growing_backoff(fake: FakeOpenAI) -> None:
    """500 then 503 then success: 3 requests, backoff waits grow and stay under the cap."""
    sleeps: list[float] = []
    fake.fail(Fault(500), Fault(503))
    policy = RetryPolicy(max_retries=4, base_delay=0.1, max_delay=1.0)
    v = openai(fake, sleep=sleeps.append, retry=policy).embed(["a", "b"])
    assert len(fake.requests) == 3 and len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2
    np.testing.assert_allclose(v, expected(fake, ["a", "b"]), atol=1e-6)


def test_openai_retries_timeouts(fake: FakeOpenAI) -> None:
    """A server that sleeps past the timeout is retried; the next answer is used."""
    fake.fail(Fault(delay=1.5))
    start = time.monotonic()
    v = openai(fake, timeout=0.3).embed(["slow"])
    assert len(fake.requests) == 2 and time.monotonic() - start < 1.5
    np.testing.assert_allclose(v, expected(fake, ["slow"]), atol=1e-6)


def test_openai_retries_connection_errors_then_unavailable() -> None:
    """Nothing listening: retried, then Unavailable with a hint."""
    sleeps: list[float] = []
    emb = OpenAIEmbedder(
        SecretStr("sk-x"),
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        retry=RetryPolicy(max_retries=2, base_delay=0.01),
        sleep=sleeps.append,
    )
    with pytest.raises(Unavailable, match=r"after 3 attempt\(s\): connection failed") as info:
        emb.embed(["x"])
    assert len(sleeps) == 2 and info.value.hint and "AFDB_OPENAI_BASE_URL" in info.value.hint


@pytest.mark.parametrize("status", [401, 403])
def test_openai_auth_errors_are_not_retried(fake: FakeOpenAI, status: int) -> None:
    """401/403 → AuthError after exactly one request, hinting at AFDB_OPENAI_API_KEY."""
    if status == 403:
        fake.fail(Fault(403))
        emb = openai(fake)
    else:
        emb = OpenAIEmbedder(SecretStr("sk-wrong-Key987"), base_url=fake.url)
    with pytest.raises(AuthError) as info:
        emb.embed(["x"])
    assert len(fake.requests) == 1
    assert info.value.hint and "AFDB_OPENAI_API_KEY" in info.value.hint
    assert "sk-wrong-Key987" not in info.value.one_line()


@pytest.mark.parametrize("key", ["sk-test-Secret123", "plain-secret-value-42"])
def test_openai_bad_request_is_invalid_input(key: str) -> None:
    """400 → InvalidInput after one request, with the API's message minus the key (any shape)."""
    with FakeOpenAI(api_key=key) as fake:
        message = f"This model's maximum context length is 8192 tokens (key {key})"
        fake.fail(Fault(400, body=json.dumps({"error": {"message": message}}).encode()))
        with pytest.raises(InvalidInput, match="maximum context length") as info:
            openai(fake).embed(["x"])
        assert len(fake.requests) == 1 and key not in info.value.one_line()


def test_openai_retries_exhausted_within_bound(fake: FakeOpenAI) -> None:
    """Always 503 (real sleeping): Unavailable after max_retries+1 requests, in bounded time."""
    fake.always = Fault(503)
    policy = RetryPolicy(max_retries=3, base_delay=0.05, max_delay=0.2, max_retry_after=0.2)
    start = time.monotonic()
    with pytest.raises(Unavailable, match=r"after 4 attempt\(s\): HTTP 503"):
        openai(fake, retry=policy).embed(["x"])
    assert len(fake.requests) == 4
    assert time.monotonic() - start < policy.worst_case(0.2)


def test_openai_timeouts_exhausted_within_bound(fake: FakeOpenAI) -> None:
    """A server that never answers in time: Unavailable within attempts x timeout + backoff."""
    fake.always = Fault(delay=2.0)
    policy = RetryPolicy(max_retries=2, base_delay=0.05, max_delay=0.1, max_retry_after=0.1)
    start = time.monotonic()
    with pytest.raises(Unavailable, match=r"no answer within 0\.25 s"):
        openai(fake, timeout=0.25, retry=policy).embed(["x"])
    elapsed = time.monotonic() - start
    assert len(fake.requests) == 3 and elapsed < policy.worst_case(0.25) + 0.5


def test_openai_slow_drip_body_is_a_timeout(fake: FakeOpenAI) -> None:
    """A body trickling in faster than the read timeout still ends at the attempt deadline."""
    fake.always = Fault(drip=0.1)  # ~8 KB in 512-byte pieces: 1.6 s, each piece within 0.3 s
    policy = RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.01, max_retry_after=0.01)
    start = time.monotonic()
    with pytest.raises(Unavailable, match="no answer within"):
        openai(fake, timeout=0.3, retry=policy).embed(["x"])
    assert len(fake.requests) == 2 and time.monotonic() - start < 1.5


def test_openai_key_never_in_repr_errors_or_logs(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """The API key is absent from repr, every raised error (and its cause), and log lines."""
    caplog.set_level(logging.DEBUG)
    key = fake.api_key
    errors: list[AfdbError] = []
    for fault in (Fault(401), Fault(400, body=f'{{"error":{{"message":"bad {key}"}}}}'.encode())):
        fake.always = fault
        with pytest.raises(AfdbError) as info:
            openai(fake).embed(["x"])
        errors.append(info.value)
    fake.always = Fault(503)
    with pytest.raises(AfdbError) as info:
        openai(fake, retry=RetryPolicy(max_retries=1, base_delay=0.01)).embed(["x"])
    errors.append(info.value)
    emb = openai(fake)
    assert key not in repr(emb) and key not in str(vars(emb).get("_key"))
    for err in errors:
        text = f"{err!r} {err.one_line()} {err.__cause__!r} {err.__context__!r}"
        assert key not in text and "Secret123" not in text
    assert key not in caplog.text and "retry 1/1" in caplog.text


def test_openai_wrong_dimension_is_a_clear_error(fake: FakeOpenAI) -> None:
    """An endpoint returning 1024-d vectors → ConfigError naming both dimensions."""
    fake.dimension = 1024
    with pytest.raises(ConfigError, match="returned 1024-d vectors, expected 1536"):
        openai(fake).embed(["x"])


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"data": [{"index": 0}]}',
        b'{"data": [{"index": 5, "embedding": [1.0]}]}',
        b'{"data": []}',
    ],
)
def test_openai_malformed_response_is_unavailable(fake: FakeOpenAI, body: bytes) -> None:
    """Garbage, missing fields, wrong indexes, too few rows: Unavailable, no retry."""
    fake.fail(Fault(200, body=body))
    with pytest.raises(Unavailable):
        openai(fake).embed(["x"])
    assert len(fake.requests) == 1


def test_openai_nan_in_response_is_rejected(fake: FakeOpenAI) -> None:
    """A NaN in a returned vector (Python's json accepts the token) is an error."""
    row = [float("nan")] + [0.1] * 1535
    fake.fail(Fault(200, body=json.dumps({"data": [{"index": 0, "embedding": row}]}).encode()))
    with pytest.raises(Unavailable, match="NaN"):
        openai(fake).embed(["x"])


def test_openai_renormalises_rows(fake: FakeOpenAI) -> None:
    """Vectors that come back not quite unit length are re-normalised."""
    row = [2.0] * 1536
    fake.fail(Fault(200, body=json.dumps({"data": [{"index": 0, "embedding": row}]}).encode()))
    assert unit_rows(openai(fake).embed(["x"]))


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "http://api.example.com/v1", "nohost"])
def test_openai_rejects_unsafe_base_url(url: str) -> None:
    """Non-http(s), or plain http to a non-loopback host (the key would travel in clear)."""
    with pytest.raises(ConfigError):
        OpenAIEmbedder(SecretStr("sk-x"), base_url=url)


# --- registry, hashing, cache, batching helper ------------------------------------------------


def test_make_embedder_registry(fake: FakeOpenAI, tmp_path: Path) -> None:
    """Known names build the right embedder with the spec's attributes; MiniLM is not loaded."""
    settings = Settings.load(
        "dev", base_dir=tmp_path, openai_api_key=fake.api_key, openai_base_url=fake.url
    )
    for name, spec in KNOWN_MODELS.items():
        emb = make_embedder(name, settings)
        assert (emb.name, emb.dimension, emb.metric, emb.normalized) == (
            spec.name, spec.dimension, spec.metric, spec.normalized,
        )  # fmt: skip
    minilm = make_embedder("all-MiniLM-L6-v2", settings)
    assert isinstance(minilm, MiniLMEmbedder) and not minilm.loaded
    assert make_embedder("text-embedding-3-small", settings).embed(["x"]).shape == (1, 1536)


def test_make_embedder_unknown_and_missing_key(tmp_path: Path) -> None:
    """An unknown name lists the known ones; OpenAI without a key is a ConfigError."""
    settings = Settings.load("dev", base_dir=tmp_path)
    with pytest.raises(InvalidInput) as info:
        make_embedder("bert-huge", settings)
    assert info.value.hint and all(name in info.value.hint for name in KNOWN_MODELS)
    with pytest.raises(ConfigError, match="needs an OpenAI API key") as cfg:
        make_embedder("text-embedding-3-small", settings)
    assert cfg.value.hint and "AFDB_OPENAI_API_KEY" in cfg.value.hint


def test_content_hash_is_canonical() -> None:
    """NFC and NFD forms hash alike; the model name is part of the key."""
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd and content_hash(nfc, "m") == content_hash(nfd, "m")
    assert content_hash("x", "a") != content_hash("x", "b")
    assert len(content_hash("x", "a")) == 64
    assert content_hash("ab", "m") != content_hash("b", "ma")  # the NUL separates the two


def test_hash_embedder_deterministic_and_similar() -> None:
    """Same text, same vector (across instances); shared words make texts closer."""
    a = HashEmbedder().embed(["Reset my password please", "!!!"])
    b = HashEmbedder().embed(["Reset my password please", "!!!"])
    assert a.shape == (2, 384) and np.array_equal(a, b) and unit_rows(a)
    q, near, far = HashEmbedder().embed(
        ["how to reset my password", "reset a forgotten password", "banana bread recipe"]
    )
    assert float(q @ near) > float(q @ far)
    assert HashEmbedder(64).embed(["x"]).shape == (1, 64) and HashEmbedder(64).name == "hash-64"
    with pytest.raises(InvalidInput):
        HashEmbedder().embed([" "])


class CountingEmbedder:
    """A fake of our own protocol that records every batch it is asked to embed."""

    name = "counting"
    dimension = 16
    metric: Any = "cosine"
    normalized = True

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self._inner = HashEmbedder(16)

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Record, then hash."""
        self.calls.append(list(texts))
        return self._inner.embed(texts)


def test_cached_embedder_hits_and_order() -> None:
    """A repeat call embeds nothing; mixed hits and misses come back in input order."""
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, max_entries=100)
    first = cached.embed(["a", "b", "a"])
    assert inner.calls == [["a", "b"]] and (cached.hits, cached.misses) == (1, 2)
    again = cached.embed(["a", "b", "a"])
    assert len(inner.calls) == 1 and np.array_equal(first, again)
    mixed = cached.embed(["c", "b", "d", "a"])
    assert inner.calls[-1] == ["c", "d"]
    np.testing.assert_array_equal(mixed, HashEmbedder(16).embed(["c", "b", "d", "a"]))
    mixed[:] = 0  # callers may scribble on results without corrupting the cache
    assert np.array_equal(cached.embed(["b"])[0], first[1])


def test_cached_embedder_evicts_least_recently_used() -> None:
    """With room for 2, using 'a' keeps it; 'b' is evicted when 'c' arrives."""
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, max_entries=2)
    cached.embed(["a", "b"])
    cached.embed(["a"])
    cached.embed(["c"])
    cached.embed(["a"])
    assert len(inner.calls) == 2 and len(cached) == 2
    cached.embed(["b"])
    assert inner.calls[-1] == ["b"]


def test_cached_embedder_threads() -> None:
    """Concurrent callers get correct rows and consistent counters."""
    cached = CachedEmbedder(CountingEmbedder(), max_entries=50)
    reference = HashEmbedder(16)
    barrier = threading.Barrier(8)

    def work(seed: int) -> bool:
        barrier.wait()
        ok = True
        for i in range(200):
            texts = [f"t{(seed * 7 + i + j) % 80}" for j in range(5)]
            ok &= bool(np.array_equal(cached.embed(texts), reference.embed(texts)))
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(8)))
    assert cached.hits + cached.misses == 8 * 200 * 5 and len(cached) <= 50


def test_cached_embedder_validates_first() -> None:
    """Bad input is InvalidInput before the inner embedder is called."""
    inner = CountingEmbedder()
    with pytest.raises(InvalidInput):
        CachedEmbedder(inner).embed(["ok", ""])
    assert inner.calls == []


def test_embed_many_reports_progress() -> None:
    """Chunks of 2 over 5 texts: progress 2, 4, 5; rows match a single call."""
    inner = CountingEmbedder()
    done: list[int] = []
    texts = [f"text {i}" for i in range(5)]
    v = embed_many(inner, texts, batch_size=2, progress=done.append)
    assert done == [2, 4, 5] and [len(c) for c in inner.calls] == [2, 2, 1]
    np.testing.assert_array_equal(v, HashEmbedder(16).embed(texts))
    with pytest.raises(InvalidInput):
        embed_many(inner, [*texts, " "], batch_size=2)
    assert len(inner.calls) == 3  # nothing embedded before the bad text was found
