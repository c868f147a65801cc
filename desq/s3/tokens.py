"""Continuation tokens of the S3 listing: an opaque, tamper-proof, stateless position.

A token is ``base64url(version | position | HMAC-SHA256(key, context | version | position))``
without padding. The position is the last key or common prefix a page returned (UTF-8); the
server keeps nothing. Decoding refuses anything it did not encode itself: another version, a
wrong MAC (checked in constant time), a truncated token, or a re-encoding of the same bytes
(non-canonical base64, padding, other alphabets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

VERSION = 1
MAX_POSITION_BYTES = 1024
"""An S3 key is at most 1,024 bytes of UTF-8, so no position is longer."""
MIN_KEY_BYTES = 16
_MAC_BYTES = 32
_CONTEXT = b"desq-s3-list-token\x00"
MAX_TOKEN_CHARS = (1 + MAX_POSITION_BYTES + _MAC_BYTES + 2) // 3 * 4
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


class BadToken(ValueError):
    """A continuation token this server did not issue (forged, altered, truncated or too long)."""


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the token key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + body, hashlib.sha256).digest()


def encode_token(after: str, key: bytes) -> str:
    """The token that resumes a listing strictly after ``after``."""
    position = after.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(position) > MAX_POSITION_BYTES:
        raise ValueError(f"a listing position is at most {MAX_POSITION_BYTES} bytes, got {len(position)}")
    body = bytes([VERSION]) + position
    return base64.urlsafe_b64encode(body + _mac(_check_key(key), body)).rstrip(b"=").decode("ascii")


def decode_token(token: str, key: bytes) -> str:
    """The position ``token`` holds; BadToken unless this key issued exactly this token."""
    key = _check_key(key)
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS or not _ALPHABET.fullmatch(token):
        raise BadToken("the continuation token is not valid")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("the continuation token is not valid") from None
    if len(raw) < 1 + _MAC_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise BadToken("the continuation token is not valid")
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, body)) or body[0] != VERSION:
        raise BadToken("the continuation token is not valid")
    try:
        return body[1:].decode("utf-8")
    except UnicodeDecodeError:
        raise BadToken("the continuation token is not valid") from None
