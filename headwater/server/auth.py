"""Bearer tokens with scopes: `read`, `append`, `admin`, each for every module or one (`append:bank`).

Tokens come from a TOML file (`headwater serve --auth tokens.toml`)::

    [[tokens]]
    name = "ingest"                 # shown in logs, never the secret
    token = "a-long-random-secret"
    scopes = ["append:bank", "read:bank"]

or from the environment: `HEADWATER_TOKENS="secret1=admin;secret2=append:bank,read"`.
`admin` allows everything; `read` and `append` are independent (a producer need not read).
With no tokens configured, every request is allowed, and the server binds to loopback only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headwater.server.http import ApiError

__all__ = ["Auth", "AuthConfigError", "SCOPES", "Token", "check_bind", "load_auth"]

SCOPES = ("read", "append", "admin")
ENV_TOKENS = "HEADWATER_TOKENS"


class AuthConfigError(ValueError):
    """The token configuration is invalid (its message names the entry and the fix)."""


@dataclass(frozen=True)
class Token:
    name: str
    secret: str
    scopes: frozenset[tuple[str, str | None]]  # (action, module or None for every module)

    def allows(self, action: str, module: str | None) -> bool:
        for granted, scope_module in self.scopes:
            if scope_module is not None and scope_module != module:
                continue
            if granted == "admin" or granted == action:
                return True
        return False


def parse_scope(text: str, where: str) -> tuple[str, str | None]:
    action, _, module = text.strip().partition(":")
    if action not in SCOPES or (_ and not module):
        raise AuthConfigError(f"{where}: scope {text!r} is not valid; use read, append or admin, "
                              "optionally for one module, e.g. append:bank")
    return action, module or None


class Auth:
    """Checks the bearer token of each request against the configured tokens."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def token_for(self, header: str | None) -> Token | None:
        if not self.enabled:
            return None
        if not header or not header.lower().startswith("bearer "):
            raise ApiError(401, "unauthorized", "this server needs a token: send the header "
                           "'Authorization: Bearer <token>' (the CLI takes --token or HEADWATER_TOKEN)")
        secret = header[7:].strip()
        # Compare with every token in constant time, so timing does not reveal a prefix.
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), secret.encode()):
                found = token
        if found is None:
            raise ApiError(401, "unauthorized", "the bearer token is not valid for this server; check it, "
                           "or ask its operator for one")
        return found

    def require(self, header: str | None, action: str, module: str | None = None) -> Token | None:
        """The caller's token if it may do `action` on `module` (None: on every module); else 401/403."""
        token = self.token_for(header)
        if token is not None and not token.allows(action, module):
            target = f" on module {module!r}" if module else " on every module"
            from headwater.errors import PermissionDenied

            raise PermissionDenied(f"token {token.name!r} may not {action}{target}: it needs the scope "
                                   f"{action}{':' + module if module else ''} (or admin)")
        return token

    def authorize(self, request: Any, action: str, module: str | None = None) -> Token | None:
        """`require` for a request (anything with `headers`): without tokens everyone may do
        everything, and the headers are not even parsed."""
        if not self.tokens:
            return None
        return self.require(request.headers.get("authorization"), action, module)

    def may(self, token: Token | None, action: str, module: str | None) -> bool:
        return token is None or token.allows(action, module)


def load_auth(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Auth:
    """Tokens from the TOML file at `path` and from HEADWATER_TOKENS in the environment."""
    environ = os.environ if environ is None else environ
    tokens = _from_file(Path(path)) if path else []
    tokens += _from_env(environ.get(ENV_TOKENS, ""))
    return Auth(tokens)


def _from_file(path: Path) -> list[Token]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise AuthConfigError(f"token file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise AuthConfigError(f"token file {str(path)!r} is not valid TOML: {e}") from None
    entries = data.get("tokens")
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f"token file {str(path)!r} has no [[tokens]] entries; see headwater/server/auth.py")
    return [_token(entry, f"{path}: tokens[{i}]") for i, entry in enumerate(entries)]


def _token(entry: Any, where: str) -> Token:
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str) or not entry["token"]:
        raise AuthConfigError(f"{where} needs token = \"<secret>\" and scopes = [...]")
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise AuthConfigError(f"{where} needs scopes = [\"read\", \"append:bank\", ...]")
    name = str(entry.get("name", where))
    return Token(name, entry["token"], frozenset(parse_scope(s, where) for s in scopes))


def _from_env(text: str) -> list[Token]:
    tokens = []
    for i, item in enumerate(part for part in text.split(";") if part.strip()):
        secret, sep, scopes = item.strip().partition("=")
        where = f"{ENV_TOKENS} entry {i + 1}"
        if not sep or not secret or not scopes:
            raise AuthConfigError(f"{where} must look like SECRET=SCOPE[,SCOPE...], e.g. s3cret=append:bank,read")
        tokens.append(Token(f"env-{i + 1}", secret, frozenset(parse_scope(s, where) for s in scopes.split(","))))
    return tokens


def check_bind(host: str, auth: Auth) -> None:
    """Refuse to serve beyond this machine without tokens: anyone reaching it could append and read."""
    if auth.enabled or _is_loopback(host):
        return
    raise AuthConfigError(
        f"refusing to listen on {host!r} without tokens: anyone who can reach it could append events and read "
        f"every PState. Configure tokens (--auth FILE or {ENV_TOKENS}), or listen on 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
