"""Guessing an original's MIME type from its name, with Python's built-in table only."""

from __future__ import annotations

import functools
import mimetypes

_MIME = mimetypes.MimeTypes()  # Python's built-in table only: the same guess on every machine
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


def guess_content_type(*names: str) -> str | None:
    """The MIME type of the first name whose extension is known (``.gz`` and such give the compressed type)."""
    for name in names:
        base = name.rsplit("/", 1)[-1] if isinstance(name, str) else ""
        dot = base.find(".")
        if dot < 0:
            continue
        kind = _type_of_suffixes(base[dot:])
        if kind:
            return kind
    return None


@functools.lru_cache(maxsize=1024)
def _type_of_suffixes(suffixes: str) -> str | None:
    """The type of a name by its suffixes alone (``.tar.gz``): only they decide mimetypes' guess."""
    kind, encoding = _MIME.guess_type("x" + suffixes, strict=True)
    return _ENCODING_TYPES.get(encoding) if encoding else kind
