"""OAuth2 for connections: client credentials (RFC 6749 §4.4) and refresh tokens (§6).

The access token is cached in memory and refreshed ``refresh_margin`` before it
expires, or once after the API answers 401. Requests that find no usable token
wait on one lock and the first one fetches, so a burst of requests makes exactly
one token request. A refresh token that the server rotates replaces the old one
and is saved through the :class:`~integrator.http.auth.TokenStore` with the
access token, so a restart needs no new grant. A refusal that only the operator
can fix (``invalid_grant``, ``invalid_client``…) becomes a permanent
:class:`~integrator.http.auth.AuthError` that every later request gets at once,
without asking the server again, until :meth:`OAuth2Auth.reset` (reload).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import anyio
import msgspec
import yarl

from integrator.http.auth import (
    AuthError,
    AuthProvider,
    SessionFactory,
    TokenStore,
    basic_credentials,
    set_header,
)
from integrator.types import REDACTOR, Duration, Secret

log = logging.getLogger("integrator.http.auth")

_MAX_BODY = 1024 * 1024
#: After a failed refresh while the old token still works, wait this long before retrying.
_STALE_RETRY_DELAY = 5.0
#: Error codes of RFC 6749 §5.2 that no retry can fix: (what it means, what to do).
_REFUSALS: dict[str, tuple[str, str]] = {
    "invalid_grant": ("the grant was refused", "check the client at the server, then reload"),
    "invalid_client": (
        "client authentication failed",
        "check client_id, client_secret and auth_method, then reload",
    ),
    "unauthorized_client": (
        "this client may not use the {grant} grant",
        "allow the grant for this client at the authorization server, then reload",
    ),
    "invalid_scope": ("the requested scope is not allowed", "check 'scope', then reload"),
    "invalid_request": ("the request was malformed", "check the auth settings, then reload"),
    "unsupported_grant_type": (
        "the server does not support the {grant} grant",
        "check 'grant', then reload",
    ),
}
_REFRESH_TOKEN_REFUSED = (
    "refresh token revoked or expired",
    "obtain a new refresh token and reload",
)
_TRANSIENT_CODES = {"temporarily_unavailable", "server_error", "slow_down"}


class OAuth2Options(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    grant: Literal["client_credentials", "refresh_token"] = "client_credentials"
    token_url: str
    client_id: str
    client_secret: Secret | None = None
    #: Required for the refresh_token grant: obtained once, out of band.
    refresh_token: Secret | None = None
    scope: str | list[str] | None = None
    #: Non-standard but common (Auth0, Okta): the API the token is for.
    audience: str | None = None
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    refresh_margin: Duration = Duration(60)
    timeout: Duration = Duration(10)

    def validate(self) -> None:
        try:
            url = yarl.URL(self.token_url)
        except ValueError as err:
            raise ValueError(f"'token_url' is not a valid URL: {err}") from err
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"'token_url' must be an http(s) URL, found {self.token_url!r}")
        if not self.client_id:
            raise ValueError("'client_id' cannot be empty")
        if self.grant == "refresh_token" and not self.refresh_token:
            raise ValueError("the refresh_token grant needs a 'refresh_token'")
        if self.grant == "client_credentials" and not self.client_secret:
            raise ValueError("the client_credentials grant needs a 'client_secret'")
        if self.timeout <= 0:
            raise ValueError("'timeout' must be more than 0s")


@dataclass(repr=False)
class _Token:
    access_token: str
    #: Wall-clock times (they outlive the process in the token store); None: unknown.
    expires_at: float | None
    refresh_at: float | None

    def fresh(self, now: float) -> bool:
        return self.refresh_at is None or now < self.refresh_at

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def __repr__(self) -> str:
        return f"_Token(access_token=***, expires_at={self.expires_at!r})"


class OAuth2Auth(AuthProvider):
    """Bearer tokens from an OAuth2 token endpoint, fetched and refreshed on demand."""

    Options = OAuth2Options
    description = "OAuth2 client credentials or refresh token, refreshed automatically"
    options: OAuth2Options

    def __init__(
        self,
        options: OAuth2Options,
        *,
        token_store: TokenStore | None = None,
        session_factory: SessionFactory = aiohttp.ClientSession,
    ) -> None:
        super().__init__(options, token_store=token_store, session_factory=session_factory)
        self.store_key = f"oauth2:{options.token_url}:{options.client_id}"
        url = yarl.URL(options.token_url)
        self._where = str(url.with_user(None).with_query(None).with_fragment(None))
        self._fingerprint = _fingerprint(options)
        self._lock = anyio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._token: _Token | None = None
        self._refresh_token = self._configured_refresh_token()
        self._failure: AuthError | None = None
        self._loaded = False
        self._generation = 0  # counts tokens obtained, so waiters can see a fetch happened
        self._quiet_until = 0.0

    # -- the AuthProvider interface ---------------------------------------------------------

    async def apply(self, headers: dict[str, str], params: dict[str, str]) -> None:
        set_header(headers, "Authorization", f"Bearer {await self.access_token()}")

    async def access_token(self) -> str:
        """A usable access token: the cached one, or a new one when it is due."""
        self._raise_if_failed()
        token = self._token
        if token is not None and self._usable(token):
            return token.access_token
        async with self._lock:
            self._raise_if_failed()  # the request we waited for may have failed for good
            await self._load_saved()
            token = self._token
            if token is not None and self._usable(token):
                return token.access_token
            try:
                token = await self._obtain()
            except AuthError as err:
                if err.permanent or token is None or token.expired(time.time()):
                    raise
                self._quiet_until = time.time() + (err.retry_after or _STALE_RETRY_DELAY)
                log.warning("%s; using the current token until it expires", err)
            return token.access_token

    async def on_unauthorized(self, headers: Mapping[str, str] | None = None) -> bool:
        """Fetch a new token once after a 401, however many requests got one.

        Given the refused request's ``headers``, a request that carried an older
        token than the current one just retries with it; without them, a request
        that waited while another fetched does. Raises AuthError when the fetch fails.
        """
        refused = _bearer_token(headers) if headers is not None else None
        seen = self._generation
        async with self._lock:
            self._raise_if_failed()
            await self._load_saved()
            current = self._token.access_token if self._token is not None else None
            if refused is not None:
                if current is not None and current != refused:
                    return True
            elif self._generation != seen:
                return True
            self._token = None
            await self._obtain()
            return True

    def reset(self) -> None:
        self._failure = None
        self._token = None
        self._refresh_token = self._configured_refresh_token()
        self._loaded = False
        self._quiet_until = 0.0
        self._generation += 1

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def __repr__(self) -> str:
        return (
            f"OAuth2Auth(grant={self.options.grant!r}, token_url={self._where!r}, "
            f"client_id={self.options.client_id!r})"
        )

    # -- state ------------------------------------------------------------------------------

    def _configured_refresh_token(self) -> str | None:
        secret = self.options.refresh_token
        return secret.reveal() if secret is not None else None

    def _usable(self, token: _Token) -> bool:
        """Fresh, or due but kept while a failed refresh waits to be retried."""
        now = time.time()
        return token.fresh(now) or (now < self._quiet_until and not token.expired(now))

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure.copy()

    async def _load_saved(self) -> None:
        """Once per start (or reset): take over the tokens a previous run saved.

        Saved tokens are used only when the configuration they came from is
        unchanged, so an operator who pastes a new refresh token gets it used.
        """
        if self._loaded or self.token_store is None:
            self._loaded = True
            return
        self._loaded = True
        try:
            saved = await self.token_store.get(self.store_key)
        except Exception as err:  # any store backend's failure: fall back to the config
            log.warning("could not read the saved OAuth2 token for %s: %s", self._where, err)
            return
        if not isinstance(saved, dict) or saved.get("fingerprint") != self._fingerprint:
            return
        refresh = saved.get("refresh_token")
        if self.options.grant == "refresh_token" and isinstance(refresh, str) and refresh:
            self._refresh_token = refresh
        access = saved.get("access_token")
        if isinstance(access, str) and access:
            token = _Token(
                access, _number(saved.get("expires_at")), _number(saved.get("refresh_at"))
            )
            if not token.expired(time.time()):
                self._token = token

    async def _save(self) -> None:
        if self.token_store is None or self._token is None:
            return
        value = {
            "version": 1,
            "fingerprint": self._fingerprint,
            "access_token": self._token.access_token,
            "expires_at": self._token.expires_at,
            "refresh_at": self._token.refresh_at,
            "refresh_token": self._refresh_token if self.options.grant == "refresh_token" else None,
        }
        try:
            await self.token_store.set(self.store_key, value)
        except Exception as err:  # the token still works in memory; the next restart may not
            log.error(
                "could not save the OAuth2 token for %s, a restart may need a new grant: %s",
                self._where,
                self._scrub(str(err)),
            )

    # -- the token request ------------------------------------------------------------------

    async def _obtain(self) -> _Token:
        """Make one token request (the lock is held) and keep its result."""
        form, headers = self._token_request()
        sent_at = time.time()
        try:
            status, body, retry_after = await self._post(form, headers)
            token = self._accept(status, body, retry_after, sent_at)
        except AuthError as err:
            if self.on_token is not None:
                self.on_token(False)
            if err.permanent:
                self._failure = err
                self._token = None
                log.error("%s", err)
            raise
        if self.on_token is not None:
            self.on_token(True)
        self._token = token
        self._quiet_until = 0.0
        self._generation += 1
        await self._save()
        return token

    def _token_request(self) -> tuple[dict[str, str], dict[str, str]]:
        options = self.options
        form: dict[str, str] = {"grant_type": options.grant}
        if options.grant == "refresh_token":
            assert self._refresh_token is not None  # Options.validate requires one
            form["refresh_token"] = self._refresh_token
        scope = " ".join(options.scope) if isinstance(options.scope, list) else options.scope
        if scope:
            form["scope"] = scope
        if options.audience:
            form["audience"] = options.audience
        headers = {"Accept": "application/json"}
        secret = options.client_secret.reveal() if options.client_secret else None
        if secret is None:  # a public client identifies itself in the body (§3.2.1)
            form["client_id"] = options.client_id
        elif options.auth_method == "client_secret_basic":
            # §2.3.1: each part form-urlencoded first. quote() writes a space as %20,
            # which every decoder reads back, where '+' is misread by some servers.
            user, password = quote(options.client_id, safe=""), quote(secret, safe="")
            headers["Authorization"] = basic_credentials(user, password)
        else:
            form["client_id"] = options.client_id
            form["client_secret"] = secret
        return form, headers

    async def _post(
        self, form: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, bytes, float | None]:
        if self._session is None:
            self._session = self.session_factory()
        timeout = aiohttp.ClientTimeout(total=float(self.options.timeout))
        try:
            async with self._session.post(
                self.options.token_url,
                data=form,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,  # never resend client credentials elsewhere
            ) as response:
                body = await self._read(response)
                return response.status, body, _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as err:
            reason = self._scrub(str(err)) or type(err).__name__
            raise AuthError(f"OAuth2 token request to {self._where} failed: {reason}") from err

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > _MAX_BODY:
                raise AuthError(f"OAuth2 token endpoint {self._where} answered with over 1 MiB")
            chunks.append(chunk)
        return b"".join(chunks)

    def _accept(
        self, status: int, body: bytes, retry_after: float | None, sent_at: float
    ) -> _Token:
        """Turn the token endpoint's answer into a token (§5.1) or a typed error (§5.2)."""
        data = _json_object(body) or {}
        if not 200 <= status < 300:
            raise self._error(status, data, retry_after)
        access, kind = data.get("access_token"), data.get("token_type")
        if not isinstance(access, str) or not access:
            raise AuthError(f"OAuth2 token endpoint {self._where} answered without access_token")
        if kind is not None and str(kind).lower() != "bearer":
            raise AuthError(
                f"OAuth2 token endpoint {self._where} issued a {str(kind)[:40]!r} token; "
                "only bearer tokens are supported",
                permanent=True,
            )
        rotated = data.get("refresh_token")
        if self.options.grant == "refresh_token" and isinstance(rotated, str) and rotated:
            if rotated != self._refresh_token:
                log.info("OAuth2 refresh token for %s was rotated", self._where)
            self._refresh_token = rotated
        lifetime = _number(data.get("expires_in"))
        if lifetime is None or lifetime <= 0:
            return _Token(access, None, None)  # valid until the API answers 401
        margin = min(float(self.options.refresh_margin), lifetime / 2)
        return _Token(access, sent_at + lifetime, sent_at + lifetime - margin)

    def _error(self, status: int, data: dict[str, Any], retry_after: float | None) -> AuthError:
        code = data.get("error") if isinstance(data.get("error"), str) else None
        detail = data.get("error_description")
        said = f" (server said: {self._scrub(detail)[:200]})" if isinstance(detail, str) else ""
        if code in _REFUSALS:
            meaning, remedy = _REFUSALS[code]
            if code == "invalid_grant" and self.options.grant == "refresh_token":
                meaning, remedy = _REFRESH_TOKEN_REFUSED
            return AuthError(
                f"OAuth2 token request to {self._where} was refused: {code} "
                f"({meaning.format(grant=self.options.grant)}); {remedy}{said}",
                permanent=True,
                code=code,
            )
        transient = status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
        what = f"HTTP {status}" + (f", {code[:60]}" if code else "")
        return AuthError(
            f"OAuth2 token request to {self._where} failed: {what}{said}",
            permanent=not transient,
            code=code,
            retry_after=retry_after,
        )

    def _scrub(self, text: str) -> str:
        """Hide every credential this provider knows of, configured or issued."""
        known = [self._refresh_token, self._token.access_token if self._token else None]
        if self.options.client_secret:
            known.append(self.options.client_secret.reveal())
        for value in known:
            if value:
                text = text.replace(value, "***")
        return REDACTOR.redact(text)


def _fingerprint(options: OAuth2Options) -> str:
    """Identifies the configuration saved tokens belong to (a hash: no secret stored)."""
    parts = [
        options.grant,
        options.scope,
        options.audience,
        options.refresh_token.reveal() if options.refresh_token else None,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    """A number of seconds from JSON: some servers send ``"3600"`` for ``3600``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _retry_after(value: str | None) -> float | None:
    seconds = _number(value)
    return seconds if seconds is not None and seconds >= 0 else None
