"""Who may change a saga through the dashboard, and how a browser proves it.

The dashboard serves reads to anyone who reaches it (it binds 127.0.0.1 by default), and
writes only to whoever holds its token:

- the JSON API takes ``Authorization: Bearer TOKEN`` on every action;
- a browser logs in once with the token and a name, and gets a session cookie: HttpOnly
  (no script reads it), SameSite=Strict (no other site's page sends it), and signed with
  HMAC-SHA256 under a key made afresh each time the dashboard starts, so it cannot be
  forged, and restarting the dashboard logs everyone out. The cookie holds the operator's
  name, when it was issued, and a random nonce; it never holds the token;
- every form that changes state carries a CSRF token derived from the session's nonce
  (an HMAC under the same key), so a form posted from anywhere but a page this session
  was served is refused even if a browser did send the cookie along.

Tokens and MACs are compared with :func:`hmac.compare_digest`. A dashboard without a
token, or started read-only, refuses every action.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

from sagakit.errors import InvalidArgumentError

SESSION_COOKIE = "sagakit_session"
SESSION_TTL = 12 * 3600.0
"""Seconds a login lasts."""
DEFAULT_OPERATOR = "dashboard"
"""Who an action is recorded as when the operator gave no name at login."""
_NAME_LIMIT = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: the name its actions are recorded under."""

    operator: str
    nonce: str
    issued: float


class Guard:
    """Checks tokens, sessions and CSRF tokens for one running dashboard."""

    def __init__(self, token: str | None, *, read_only: bool = False) -> None:
        self._token = token.encode() if token else None
        self.read_only = read_only or not token
        """True when no action is served at all (no token configured, or ``--read-only``)."""
        self._key = secrets.token_bytes(32)

    def token_ok(self, given: str | None) -> bool:
        """Whether ``given`` is the dashboard's token (always False when read-only)."""
        if self.read_only or self._token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def bearer_ok(self, credentials: str | None) -> bool:
        """Whether a bearer token from an ``Authorization`` header is the token."""
        return self.token_ok(credentials)

    def open_session(self, operator: str, now: float | None = None) -> str:
        """A signed cookie value for a browser that gave the right token."""
        payload = {
            "operator": operator,
            "nonce": secrets.token_urlsafe(16),
            "issued": time.time() if now is None else now,
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._mac(b'session', body.encode()))}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value proves, or None (absent, forged, expired, read-only)."""
        if self.read_only or not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        try:
            given = _unb64(mac)
            fields = json.loads(_unb64(body))
            session = Session(
                str(fields["operator"]), str(fields["nonce"]), float(fields["issued"])
            )
        except (ValueError, TypeError, KeyError, binascii.Error):
            return None
        if not hmac.compare_digest(given, self._mac(b"session", body.encode())):
            return None
        age = (time.time() if now is None else now) - session.issued
        return session if 0 <= age < SESSION_TTL else None

    def csrf(self, session: Session) -> str:
        """The CSRF token the forms of ``session``'s pages carry."""
        return _b64(self._mac(b"csrf", session.nonce.encode()))

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(
            given.encode(), self.csrf(session).encode()
        )

    def _mac(self, purpose: bytes, message: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\0" + message, hashlib.sha256).digest()


def operator_name(text: str | None) -> str:
    """The name a login gave, checked: what the saga log will say did the actions."""
    name = (text or "").strip() or DEFAULT_OPERATOR
    if len(name) > _NAME_LIMIT or _CONTROL.search(name):
        raise InvalidArgumentError(
            f"the operator's name must be at most {_NAME_LIMIT} printable characters"
        )
    return name


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
