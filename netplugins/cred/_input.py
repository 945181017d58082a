"""
What every netplugins checker does to credentials before looking at them.

Protocols hand over usernames and passwords as C{str} (Twisted's FTP) or C{bytes}
(mail, conch); checkers take both.  Input no backend should see is refused here,
before any hashing or network traffic: empty or whitespace-only passwords, NUL
bytes, undecodable bytes, absurd lengths.
"""

from __future__ import annotations

from twisted.cred.error import UnauthorizedLogin

MAX_USERNAME = 256
MAX_PASSWORD = 1024


def _text(value: str | bytes, what: str, limit: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin(f"{what} is not UTF-8") from None
    if not isinstance(value, str):
        raise UnauthorizedLogin(f"{what} is not text")
    if "\x00" in value:
        raise UnauthorizedLogin(f"{what} contains NUL")
    if len(value) > limit:
        raise UnauthorizedLogin(f"{what} is too long")
    return value


def normaliseCredentials(
    username: str | bytes, password: str | bytes
) -> tuple[str, str]:
    """
    Decode and screen a username and password.

    @return: both as C{str}.
    @raise UnauthorizedLogin: for an empty or whitespace-only username or
        password, NUL bytes, non-UTF-8 bytes or over-long values.
    """
    name = _text(username, "username", MAX_USERNAME)
    secret = _text(password, "password", MAX_PASSWORD)
    if not name.strip():
        raise UnauthorizedLogin("empty username")
    if not secret.strip():
        raise UnauthorizedLogin("empty password")
    return name, secret


def avatarIdFor(username: str | bytes, name: str) -> str | bytes:
    """
    The avatar ID for C{name}, in the type the protocol gave the username in, so
    that realms written for C{bytes} (mail) and C{str} (FTP) both work.
    """
    return name.encode("utf-8") if isinstance(username, bytes) else name
