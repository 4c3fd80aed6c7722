"""The OpenAI embedder: ``text-embedding-3-small`` over HTTPS, batched, retried, bounded in time.

Transient failures (429, 5xx, timeouts) are retried through one :class:`RetryPolicy`; auth and
request errors are not. The API key travels only in the ``Authorization`` header and never appears
in ``repr()``, an error message or a log line. Also importable from :mod:`.embedders`.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import httpx
import numpy as np
from pydantic import SecretStr

from autoforge_data.errors import AuthError, ConfigError, InvalidInput, Unavailable
from autoforge_data.vector.embedders import (
    MINILM,
    OPENAI_MAX_INPUTS,
    OPENAI_SMALL,
    FloatArray,
    Metric,
    _check_output,
    _normalize,
    check_texts,
)

if TYPE_CHECKING:
    from autoforge_data.settings import Settings

log = logging.getLogger("autoforge_data.vector.embedders")  # its name from before the split


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of transient failures (429, 5xx, timeouts): exponential backoff with jitter."""

    max_retries: int = 4
    base_delay: float = 0.5  # the first backoff; doubles per retry
    max_delay: float = 8.0  # cap of one backoff
    max_retry_after: float = 30.0  # a longer Retry-After means give up now

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (0-based), or None to give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return max(retry_after, 0.0) if retry_after <= self.max_retry_after else None
        step = min(self.max_delay, self.base_delay * 2.0**attempt)
        return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - jitter, not cryptography

    def worst_case(self, attempt_seconds: float) -> float:
        """Upper bound of the total time of one request: every attempt and every wait."""
        wait = max(self.max_delay, self.max_retry_after)
        return (self.max_retries + 1) * attempt_seconds + self.max_retries * wait


_RETRYABLE = {408, 409, 429}
_KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_*.\-]{4,}")
_KEY_HINT = "check AFDB_OPENAI_API_KEY: it may be wrong, revoked, or lack access to embeddings"
_API_HINT = "check that AFDB_OPENAI_BASE_URL is an OpenAI-compatible embeddings API"
_DOWN_HINT = (
    "the OpenAI API is unreachable or overloaded: check AFDB_OPENAI_BASE_URL and the network, "
    "or raise AFDB_OPENAI_TIMEOUT / AFDB_OPENAI_MAX_RETRIES"
)


class OpenAIEmbedder:
    """OpenAI ``text-embedding-3-small`` (1536-d, cosine) over HTTPS, batched, retried, bounded."""

    metric: Metric = "cosine"
    normalized = True

    def __init__(
        self,
        api_key: SecretStr,
        *,
        model: str = OPENAI_SMALL,
        dimension: int = 1536,
        base_url: str = "https://api.openai.com/v1",
        timeout: float = 20.0,
        batch_size: int = 256,
        encoding_format: Literal["float", "base64"] = "base64",
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not api_key.get_secret_value():
            raise ConfigError("the OpenAI API key is empty", hint="set AFDB_OPENAI_API_KEY")
        if not 1 <= batch_size <= OPENAI_MAX_INPUTS:
            raise InvalidInput(f"batch_size must be 1..{OPENAI_MAX_INPUTS}, got {batch_size}")
        self.name = model
        self.dimension = dimension
        self.base_url = _check_base_url(base_url)
        self.timeout = timeout
        self.batch_size = batch_size
        self.encoding_format = encoding_format
        self.retry = retry or RetryPolicy()
        self._key = api_key
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIEmbedder:
        """The embedder for AFDB_OPENAI_*; ConfigError if no API key is set."""
        key = settings.openai_api_key
        if key is None or not key.get_secret_value():
            raise ConfigError(
                f"{OPENAI_SMALL} needs an OpenAI API key",
                hint=f"set AFDB_OPENAI_API_KEY, or use AFDB_EMBEDDING_MODEL={MINILM} (local)",
            )
        return cls(
            key,
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout,
            batch_size=min(settings.embed_batch_size, OPENAI_MAX_INPUTS),
            retry=RetryPolicy(max_retries=settings.openai_max_retries),
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIEmbedder(model={self.name!r}, base_url={self.base_url!r}, "
            f"batch_size={self.batch_size}, api_key='**********')"
        )

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """Embed in requests of up to ``batch_size`` inputs; rows re-normalised, in input order."""
        items = check_texts(texts)
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            self._parse_into(self._request(batch), out[start : start + len(batch)])
        checked = _check_output(out, len(items), self.dimension, self.name, _API_HINT)
        return _normalize(checked, self.name)

    def _request(self, batch: list[str]) -> bytes:
        """POST one batch, retrying transient failures per the policy; the 200 response body."""
        body = {"model": self.name, "input": batch, "encoding_format": self.encoding_format}
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                status, headers, content = self._send(body)
            except httpx.TimeoutException:
                failure = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                failure = f"connection failed ({type(exc).__name__})"
            else:
                if status == 200:
                    return content
                self._raise_permanent(status, content)
                retry_after = _retry_after(headers)
                failure = f"HTTP {status}"
                if retry_after is not None:
                    failure += f", asked to retry after {retry_after:g} s"
            delay = self.retry.delay(attempt, retry_after)
            if delay is None:
                raise Unavailable(
                    f"OpenAI embeddings failed after {attempt + 1} attempt(s): {failure}",
                    hint=_DOWN_HINT,
                )
            retries = f"{attempt + 1}/{self.retry.max_retries}"
            log.warning("OpenAI embeddings: %s; retry %s in %.2f s", failure, retries, delay)
            self._sleep(delay)
            attempt += 1

    def _send(self, body: dict[str, Any]) -> tuple[int, httpx.Headers, bytes]:
        """One attempt, bounded: httpx's per-phase timeouts plus a deadline on the whole body."""
        deadline = time.monotonic() + self.timeout
        with self._client.stream("POST", f"{self.base_url}/embeddings", json=body) as response:
            chunks = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > deadline:  # a server dripping bytes must not hold us
                    raise httpx.ReadTimeout("response body too slow", request=response.request)
            return response.status_code, response.headers, b"".join(chunks)

    def _raise_permanent(self, status: int, content: bytes) -> None:
        """Raise for statuses that retrying cannot fix (auth, bad request, not found)."""
        if status in _RETRYABLE or status >= 500:
            return
        if status in (401, 403):
            raise AuthError(f"OpenAI rejected the API key (HTTP {status})", hint=_KEY_HINT)
        if status == 404:
            raise ConfigError(
                f"no embeddings endpoint at {self.base_url}/embeddings (HTTP 404)",
                hint="check AFDB_OPENAI_BASE_URL (e.g. https://api.openai.com/v1)",
            )
        raise InvalidInput(
            f"OpenAI rejected the request (HTTP {status}): {self._api_message(content)}",
            hint="a text may exceed 8,192 tokens, or the batch is too large: "
            "shorten it or lower AFDB_EMBED_BATCH_SIZE",
        )

    def _api_message(self, content: bytes) -> str:
        """The API's error message, shortened and with anything key-like removed."""
        try:
            message = str(json.loads(content)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = content.decode("utf-8", "replace")
        message = message.replace(self._key.get_secret_value(), "***")
        return _KEY_LIKE.sub("sk-***", message)[:300]

    def _parse_into(self, content: bytes, out: FloatArray) -> None:
        """Decode a response into ``out`` by ``data[i].index``; malformed → Unavailable."""
        try:
            rows = json.loads(content)["data"]
            vectors = {int(row["index"]): _decode_vector(row["embedding"]) for row in rows}
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(
                f"OpenAI returned a malformed embeddings response ({type(exc).__name__})",
                hint=_API_HINT,
            ) from None
        if len(rows) != len(out) or sorted(vectors) != list(range(len(out))):
            raise Unavailable(f"OpenAI returned {len(rows)} embeddings for {len(out)} inputs")
        for index, vector in vectors.items():
            if vector.shape != (self.dimension,):
                raise ConfigError(
                    f"{self.name} returned {vector.size}-d vectors, expected {self.dimension}",
                    hint=f"AFDB_OPENAI_BASE_URL must serve {self.name} at full dimension",
                )
            out[index] = vector


def _decode_vector(raw: object) -> FloatArray:
    """One embedding: a list of floats, or base64 of little-endian float32."""
    if isinstance(raw, str):
        return np.frombuffer(base64.b64decode(raw, validate=True), dtype="<f4").astype(np.float32)
    if isinstance(raw, list):
        return np.asarray(raw, dtype=np.float32)
    raise TypeError(f"embedding is a {type(raw).__name__}")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait, from OpenAI's ``retry-after-ms`` or ``Retry-After`` (in seconds)."""
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        return float(headers["retry-after"]) if "retry-after" in headers else None
    except ValueError:  # an HTTP date: OpenAI does not send those; use our own backoff
        return None


def _check_base_url(url: str) -> str:
    """The API base URL without a trailing slash; plain http only to loopback (the key is sent)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigError(
            f"AFDB_OPENAI_BASE_URL must be an http(s) URL, got {url!r}",
            hint="e.g. https://api.openai.com/v1",
        )
    if parts.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"AFDB_OPENAI_BASE_URL uses plain http to {host!r}: the API key would travel in clear",
            hint="use https://, or http:// only to 127.0.0.1",
        )
    return url.rstrip("/")
