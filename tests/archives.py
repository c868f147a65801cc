"""Test archives: members packed into the containers the default layout (name mode, 8 bits) names."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import datetime
from typing import Optional

from desq.container import ContainerWriter
from desq.settings import load_settings
from desq.storage import Storage

Member = tuple[bytes, Optional[str], Optional[datetime]]
"""A member's bytes, content type and created_at (None: not recorded)."""


def pack(storage: Storage, files: Mapping[str, Member]) -> None:
    """Write ``files`` (name -> member) into their containers on ``storage``, one object a container."""
    layout = load_settings(env={}).layout
    by_key: dict[str, list[str]] = {}
    for name in files:
        by_key.setdefault(layout.locate_name(name).container, []).append(name)
    for key, names in by_key.items():
        out = io.BytesIO()
        with ContainerWriter(out) as writer:
            for name in names:
                data, content_type, created = files[name]
                writer.add(name, data, content_type=content_type, created_at=created)
        storage.put(key, out.getvalue())
