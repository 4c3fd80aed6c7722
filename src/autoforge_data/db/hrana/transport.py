"""The Hrana-over-HTTP pipeline client: one ``httpx.Client``, bounded waits, batons, round trips.

:class:`PipelineClient` is the base of :class:`~autoforge_data.db.hrana.Connection`: it turns a
list of statements into one ``POST {base}/v2/pipeline`` request (a Hrana batch whose steps each run
only if the one before succeeded), carries the stream's baton between requests, counts
``round_trips``, tracks ``last_replication_index`` and turns HTTP failures into
:class:`TransportError`/:class:`AuthError` without ever showing the auth token.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Final
from urllib.parse import urlsplit

import httpx

from autoforge_data.db.hrana.errors import (
    _LOST_STREAM_CODES,
    AuthError,
    DatabaseError,
    Error,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    ReadOnlyError,
    TransportError,
    _error_from_server,
    scrub,
)
from autoforge_data.db.hrana.statements import _Result, _Stmt
from autoforge_data.db.hrana.values import JSONDict

log = logging.getLogger(__package__)  # one logger for the whole driver: autoforge_data.db.hrana

_PIPELINE_PATH: Final = "/v2/pipeline"


def _claims_read_only(token: str) -> bool:
    """True if ``token`` is a JWT whose payload says ``"a": "ro"`` (sqld and Turso read-only).

    Only a hint (the signature is not checked): it spares the session PRAGMAs, which sqld counts
    as writes and refuses to read-only tokens.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    return isinstance(claims, dict) and claims.get("a") == "ro"


class PipelineClient:
    """The HTTP side of a connection: URL, auth token, ``httpx.Client``, stream baton, counters."""

    def __init__(
        self,
        url: str,
        *,
        auth_token: str | None,
        timeout: float,
        connect_timeout: float,
        namespace: str | None,
    ) -> None:
        if url.startswith("libsql://"):
            url = "https://" + url.removeprefix("libsql://")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InterfaceError("the URL must look like http(s)://host[:port]", code="URL")
        if parts.username or parts.password:
            raise InterfaceError(
                "credentials do not belong in the URL: pass auth_token=...", code="URL"
            )
        if timeout <= 0 or connect_timeout <= 0:
            raise InterfaceError("timeouts must be positive", code="ARGS")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.url = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
        self.namespace = namespace
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.round_trips = 0
        self.last_replication_index: int | None = None
        self._token = auth_token or None
        #: True when the token may only read (from its claims, or learnt from an HTTP 403): the
        #: session PRAGMAs are then not sent (sqld refuses any PRAGMA to read-only tokens).
        self.token_read_only = bool(self._token) and _claims_read_only(self._token or "")
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        if namespace:
            headers["host"] = f"{namespace}.{netloc}"
        self._client: httpx.Client | None = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            follow_redirects=False,
        )
        # the open stream of a transaction (None outside one, or before its first request)
        self._baton: str | None = None
        self._stream_url: str | None = None

    # ---------------------------------------------------------------- protocol

    def _batch(
        self,
        stmts: list[_Stmt],
        *,
        baton: str | None,
        close: bool,
        rollback_if_last_fails: bool = False,
    ) -> None:
        """One HTTP request: ``stmts`` as one batch, each step running only if the one before it
        succeeded (plus an optional ROLLBACK step if the last one did not), then maybe ``close``.
        Results and errors are stored in the statements."""
        try:
            try:
                self._exchange(stmts, baton, close=close, rollback=rollback_if_last_fails)
            except ReadOnlyError:
                # sqld refuses the whole request (nothing ran) when a read-only token sends a
                # PRAGMA; if only our session PRAGMAs made it a "write", resend without them
                pragmas = [s for s in stmts if s.internal and s.kind == "pragma"]
                if not pragmas or not all(s.internal or s.kind == "select" for s in stmts):
                    raise
                self.token_read_only = True
                log.info("the auth token is read-only: session PRAGMAs are not sent any more")
                for s in pragmas:
                    s.state = "skipped"
                self._exchange(
                    [s for s in stmts if s not in pragmas],
                    baton,
                    close=close,
                    rollback=rollback_if_last_fails,
                )
        finally:
            for s in stmts:
                if s.state in ("new", "queued"):  # the request failed as a whole
                    s.state = "skipped"

    def _exchange(
        self, stmts: list[_Stmt], baton: str | None, *, close: bool, rollback: bool
    ) -> None:
        steps: list[JSONDict] = []
        for i, s in enumerate(stmts):
            step: JSONDict = {"stmt": s.payload}
            if i:
                step["condition"] = {"type": "ok", "step": i - 1}
            steps.append(step)
        if rollback:
            steps.append(
                {
                    "stmt": {"sql": "ROLLBACK", "want_rows": False},
                    "condition": {"type": "not", "cond": {"type": "ok", "step": len(stmts) - 1}},
                }
            )
        requests: list[JSONDict] = [{"type": "batch", "batch": {"steps": steps}}]
        if close:
            requests.append({"type": "close"})
        body = self._post(requests, baton)
        results = body.get("results")
        if (
            not isinstance(results, list)
            or len(results) != len(requests)
            or not all(isinstance(r, dict) for r in results)
        ):
            raise TransportError(
                f"libSQL server {self._where()} sent a malformed response", code="PROTOCOL"
            )
        if close:
            self._baton = self._stream_url = None
        else:
            new_baton = body.get("baton")
            if not new_baton:
                raise TransportError(
                    "the server closed the transaction's stream", code="STREAM_CLOSED"
                )
            self._baton = str(new_baton)
            stream_url = str(body.get("base_url") or "").rstrip("/")
            if stream_url.startswith("https://") or (
                stream_url.startswith("http://") and self.url.startswith("http://")
            ):
                self._stream_url = stream_url  # sticky stream routing; never downgrade to http
        first = results[0]
        if first.get("type") != "ok":
            err = first.get("error") or {}
            raise _error_from_server(
                self._scrub(str(err.get("message", "batch failed"))), err.get("code")
            )
        self._apply_results(stmts, first.get("response", {}).get("result", {}))

    def _apply_results(self, stmts: list[_Stmt], result: JSONDict) -> None:
        self._note_replication_index(result.get("replication_index"))
        step_results = result.get("step_results") or []
        step_errors = result.get("step_errors") or []
        for i, s in enumerate(stmts):
            res = step_results[i] if i < len(step_results) else None
            err = step_errors[i] if i < len(step_errors) else None
            if err is not None:
                s.state = "failed"
                s.error = _error_from_server(
                    self._scrub(str(err.get("message", ""))), err.get("code")
                )
            elif res is not None:
                s.state, s.result = "done", _Result(res)
                self._note_replication_index(res.get("replication_index"))
            else:
                s.state = "skipped"

    def _close_stream(self, baton: str) -> None:
        try:
            self._post([{"type": "close"}], baton)
        except Error as exc:
            log.debug("closing an idle stream failed: %s", exc.message)

    def _post(self, requests: list[JSONDict], baton: str | None) -> JSONDict:
        client = self._client
        if client is None:
            raise InterfaceError("Cannot operate on a closed database.", code="CLOSED")
        base = self._stream_url if (baton is not None and self._stream_url) else self.url
        content = json.dumps(
            {"baton": baton, "requests": requests}, allow_nan=False, separators=(",", ":")
        ).encode()
        self.round_trips += 1
        started = time.monotonic()
        where = self._where()
        try:
            response = client.post(base + _PIPELINE_PATH, content=content)
        except httpx.ConnectTimeout as exc:
            raise TransportError(
                f"libSQL server {where} is unreachable: no connection within "
                f"{self.connect_timeout:g} s",
                code="CONNECT_TIMEOUT",
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"libSQL server {where} did not answer within {self.timeout:g} s", code="TIMEOUT"
            ) from exc
        except httpx.ConnectError as exc:
            raise TransportError(
                f"libSQL server {where} is unreachable: {self._scrub(str(exc))}", code="CONNECT"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(
                f"the connection to libSQL server {where} failed: {self._scrub(str(exc))}",
                code="NETWORK",
            ) from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug(
            "hrana request %d: %d requests, HTTP %d, %.1f ms",
            self.round_trips,
            len(requests),
            response.status_code,
            elapsed_ms,
        )
        status = response.status_code
        if status == 403 and "permission" in self._body_text(response).lower():
            raise ReadOnlyError(
                f"attempt to write a readonly database: libSQL server {where} allows this auth "
                f"token to read only (HTTP 403)",
                code="HTTP_403",
            )
        if status in (401, 403):
            what = "rejected the auth token" if self._token else "requires an auth token"
            reason = self._server_reason(response)
            raise AuthError(
                f"libSQL server {where} {what} (HTTP {status}{reason})", code=f"HTTP_{status}"
            )
        if status >= 500:
            raise TransportError(
                f"libSQL server {where} failed with HTTP {status}: {self._body_text(response)}",
                code=f"HTTP_{status}",
            )
        if status != 200:
            raise self._client_error(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise TransportError(
                f"libSQL server {where} sent a response that is not JSON", code="PROTOCOL"
            ) from exc
        if not isinstance(body, dict):
            raise TransportError(
                f"libSQL server {where} sent an unexpected response", code="PROTOCOL"
            )
        return body

    def _client_error(self, response: httpx.Response) -> DatabaseError:
        text = self._body_text(response)
        code: str | None = None
        message = text
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            if isinstance(data.get("message"), str):
                message = self._scrub(data["message"])
                code = data.get("code") if isinstance(data.get("code"), str) else None
            elif isinstance(data.get("error"), str):
                message = self._scrub(data["error"])
        lowered = message.lower()
        if code is None and "baton" in lowered:
            code = "BATON_REUSED" if "already been used" in lowered else "BATON_INVALID"
        if (code or "") in _LOST_STREAM_CODES:
            why = (
                "it expired after being idle too long"
                if code == "STREAM_EXPIRED"
                else "the server does not know it"
            )
            return TransportError(
                f"the transaction's stream on libSQL server {self._where()} is gone: {why} "
                f"({message})",
                code=code,
            )
        if code is not None:
            return _error_from_server(message, code)
        return OperationalError(
            f"libSQL server {self._where()} refused the request (HTTP {response.status_code}): "
            f"{message}",
            code=f"HTTP_{response.status_code}",
        )

    def _server_reason(self, response: httpx.Response) -> str:
        """``": <the server's short reason>"`` from a JSON error body, scrubbed, or ``""``."""
        try:
            data = response.json()
        except ValueError:
            return ""
        reason = data.get("error") or data.get("message") if isinstance(data, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            return ""
        return ": " + self._scrub(reason.strip().removeprefix("Unauthorized: ").strip("`"))[:200]

    def _body_text(self, response: httpx.Response) -> str:
        try:
            text = response.text
        except (UnicodeDecodeError, httpx.HTTPError):
            text = ""
        return self._scrub(text.strip()[:300])

    def _scrub(self, text: str) -> str:
        return scrub(text, self._token)

    def _where(self) -> str:
        return f"at {self.url}" + (f" (namespace {self.namespace!r})" if self.namespace else "")

    def _note_replication_index(self, value: object) -> None:
        if value is None:
            return
        try:
            index = int(str(value))
        except ValueError:
            return
        if self.last_replication_index is None or index > self.last_replication_index:
            self.last_replication_index = index

    def _check_open(self) -> None:
        if self._client is None:
            raise ProgrammingError("Cannot operate on a closed database.", code="CLOSED")
