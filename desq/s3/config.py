"""The ``[s3]`` settings' checks (desq/settings.py declares the keys): S3's bucket-name rules, the
credentials' form, the region's. Each raises ValueError with the reason, never showing a secret."""

from __future__ import annotations

import re

BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_BUCKETS = frozenset({"healthz", "readyz", "metrics"})
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{3,128}")
_SECRET_KEY_RE = re.compile(r"[\x21-\x7e]{8,128}")


def check_bucket(value: str) -> None:
    """S3's bucket-name rules, less the names of the s3 role's own paths."""
    if not BUCKET_RE.fullmatch(value) or ".." in value or ".-" in value or "-." in value:
        raise ValueError(f"{value!r} is not an S3 bucket name (3-63 of a-z 0-9 . -, starting and ending with a letter or digit)")
    if re.fullmatch(r"[0-9]+(\.[0-9]+){3}", value) or value.startswith(("xn--", "sthree-")) or value.endswith(("-s3alias", "--ol-s3")):
        raise ValueError(f"{value!r} is not an S3 bucket name (an IP address, or a prefix or suffix S3 reserves)")
    if value in _RESERVED_BUCKETS:
        raise ValueError(f"{value!r} is a path the s3 role serves itself (/healthz, /readyz, /metrics)")


def check_credentials(value: tuple[str, ...]) -> None:
    """Each entry ``ACCESS_KEY_ID:SECRET_ACCESS_KEY``, each id once; an error names the entry by number."""
    seen: set[str] = set()
    for number, entry in enumerate(value, 1):
        key_id, sep, secret = entry.partition(":")
        if not sep or not _ACCESS_KEY_RE.fullmatch(key_id) or not _SECRET_KEY_RE.fullmatch(secret):
            raise ValueError(f"entry {number} is not ACCESS_KEY_ID:SECRET_ACCESS_KEY (an id of 3-128 of A-Z a-z 0-9 _ . -, a secret of 8-128 printable ASCII characters, no spaces)")
        if key_id in seen:
            raise ValueError(f"entry {number} repeats the access key id {key_id!r}")
        seen.add(key_id)


def check_region(value: str) -> None:
    """A region name as clients put it in their signatures' scope."""
    if not re.fullmatch(r"[a-z0-9_-]{1,64}", value):
        raise ValueError(f"{value!r} is not a region name (1-64 of a-z 0-9 _ -, e.g. us-east-1)")
