"""Who may call the service: loopback only by default; any other address needs a bearer token.

The token comes from ``--token-file`` (its first line) or the ``LSTMCAST_SERVE_TOKEN`` environment variable, is
at least 16 characters, and is compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from lstmcast.errors import ConfigError, short_path

TOKEN_ENV = "LSTMCAST_SERVE_TOKEN"
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(token_file: str | os.PathLike[str] | None, host: str) -> str | None:
    """The bearer token, or None on a loopback address without one; a ConfigError (exit 2) when a non-loopback
    bind has none or the token is unusable."""
    token = None
    if token_file is not None:
        path = Path(token_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file {short_path(path)} could not be read ({type(exc).__name__}): give a "
                              "readable text file whose first line is the token") from None
        token = lines[0].strip() if lines else ""
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
    if token is None:
        if not is_loopback(host):
            raise ConfigError(f"--host {host} is reachable from other machines: a bearer token is required there: "
                              f"pass --token-file FILE or set {TOKEN_ENV} (or bind 127.0.0.1)")
        return None
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise ConfigError(f"the bearer token must be at least {MIN_TOKEN} characters without spaces: generate one, "
                          "e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\"")
    return token


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries the token (always True without a token)."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
