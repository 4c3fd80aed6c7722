"""Bearer API keys on the routes: ``Depends(require_scope("read" | "write" | "admin"))``.

Policy (``AFDB_API_AUTH``): ``off``; ``required``; ``auto`` (the default) is off only for the dev
profile bound to a loopback host, so ``make run`` works without a key, and required otherwise.
A missing or invalid key is 401 with ``WWW-Authenticate: Bearer``; a key below the route's scope
is 403. Authenticated keys are remembered for a few seconds (:class:`~autoforge_data.services.
apikeys.KeyCache`), so a request costs no database read for its key most of the time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autoforge_data.api.deps import run_blocking
from autoforge_data.services import apikeys
from autoforge_data.services.apikeys import ApiKey, Forbidden, InvalidKey
from autoforge_data.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="an API key: afdb apikey create")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def auth_required(settings: Settings) -> bool:
    """Whether the API asks for a key under these settings."""
    if settings.api_auth != "auto":
        return settings.api_auth == "required"
    return not (settings.env == "dev" and _loopback(settings.host))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_cache(app: FastAPI) -> apikeys.KeyCache:
    """The app's cache of authenticated keys (made on first use)."""
    cache: apikeys.KeyCache | None = getattr(app.state, "api_keys", None)
    if cache is None:
        cache = app.state.api_keys = apikeys.KeyCache()
    return cache


async def authenticate_request(request: Request, token: str | None) -> ApiKey | None:
    """The key of a request (None when auth is off); raises InvalidKey."""
    if not auth_required(request.app.state.settings):
        return None
    if not token:
        raise InvalidKey("an API key is required")
    cache = key_cache(request.app)
    key = cache.get(token)
    if key is None:
        key = await run_blocking(request.app, apikeys.authenticate, request.app.state.db, token)
        cache.put(token, key)
    return key


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKey | None]]:
    """A dependency that lets the request through with a key of ``scope`` or above."""
    apikeys.check_scope(scope)

    async def dependency(request: Request, credentials: Credentials) -> ApiKey | None:
        token = credentials.credentials if credentials is not None else None
        key = await authenticate_request(request, token)
        if key is not None and not key.allows(scope):
            raise Forbidden(
                f"this call needs a {scope} key; key {key.id} has scope {key.scope}",
                hint=f"create one with: afdb apikey create --scope {scope}",
            )
        return key

    return dependency


ReadKey = Annotated[ApiKey | None, Depends(require_scope("read"))]
WriteKey = Annotated[ApiKey | None, Depends(require_scope("write"))]
AdminKey = Annotated[ApiKey | None, Depends(require_scope("admin"))]
