"""A DES v1 writer for tests only, written from ``des-v1-format.md`` (desq itself never writes v1).

It writes well-formed containers by default and, through overrides, the odd and damaged ones the
reader must cope with: duplicate names, external and flagged members, bad offsets, raw metadata,
gaps between regions, wrong magic.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HEADER_MAGIC = b"DESHEAD1"
FOOTER_MAGIC = b"DESFOOT1"
HEADER = struct.Struct("<8sB7s")
FOOTER = struct.Struct("<8sB7s7Q")
NAME_LEN = struct.Struct("<H")
ENTRY_FIELDS = struct.Struct("<QQQQI")
FOOTER_FIELDS = ("data_start", "data_length", "meta_start", "meta_length", "index_start", "index_length", "file_count")

EXTERNAL = 0x1
COMPRESSED = 0x2
ENCRYPTED = 0x4
DELETED = 0x8


@dataclass
class V1Member:
    """One member to write; the ``None`` overrides take the value a correct writer would."""

    name: str | bytes
    data: bytes = b""
    mime: str | None = None
    external_key: str | None = None
    """Set for a member stored outside the container; ``data`` is then the external object."""
    flags: int | None = None
    meta: bytes | None = None
    """Raw META bytes written instead of the JSON object."""
    extra_meta: Mapping[str, object] = field(default_factory=dict)
    name_len: int | None = None
    data_offset: int | None = None
    data_length: int | None = None
    meta_offset: int | None = None
    meta_length: int | None = None

    @property
    def external(self) -> bool:
        return self.external_key is not None or bool((self.flags or 0) & EXTERNAL)


@dataclass
class V1Container:
    """A written container and where its parts are."""

    blob: bytes
    footer: dict[str, int]
    entry_offsets: list[int]
    externals: dict[str, bytes]


def meta_json(member: V1Member) -> bytes:
    """The compact UTF-8 JSON META object the old tool wrote for a member."""
    if member.meta is not None:
        return member.meta
    obj: dict[str, object] = {"size": len(member.data)}
    if member.mime is not None:
        obj["mime"] = member.mime
    if member.external:
        obj["is_external"] = True
        if member.external_key is not None:
            obj["external_key"] = member.external_key
    obj.update(member.extra_meta)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build_v1(
    members: Iterable[V1Member],
    *,
    header: bytes | None = None,
    footer_magic: bytes = FOOTER_MAGIC,
    footer_version: int = 1,
    reserved: bytes = bytes(7),
    gaps: tuple[bytes, bytes, bytes] = (b"", b"", b""),
    index_tail: bytes = b"",
    footer_overrides: Mapping[str, int] | None = None,
) -> V1Container:
    """HEADER | DATA | gap | META | gap | INDEX | gap | FOOTER, with optional damage."""
    members = list(members)
    head = HEADER.pack(HEADER_MAGIC, 1, bytes(7)) if header is None else header
    data, metas, data_at, meta_at = bytearray(), bytearray(), [], []
    data_start = len(head)
    for m in members:
        data_at.append(0 if m.external else data_start + len(data))
        if not m.external:
            data += m.data
    meta_start = data_start + len(data) + len(gaps[0])
    for m in members:
        meta_at.append(meta_start + len(metas))
        metas += meta_json(m)
    index_start = meta_start + len(metas) + len(gaps[1])
    index, entry_offsets = bytearray(), []
    for m, d_at, m_at in zip(members, data_at, meta_at):
        entry_offsets.append(index_start + len(index))
        name = m.name.encode("utf-8") if isinstance(m.name, str) else m.name
        meta_len = len(meta_json(m))
        index += NAME_LEN.pack(len(name) if m.name_len is None else m.name_len) + name
        index += ENTRY_FIELDS.pack(
            d_at if m.data_offset is None else m.data_offset,
            len(m.data) if m.data_length is None else m.data_length,
            m_at if m.meta_offset is None else m.meta_offset,
            meta_len if m.meta_length is None else m.meta_length,
            (EXTERNAL if m.external else 0) if m.flags is None else m.flags,
        )
    index += index_tail
    fields = {
        "data_start": data_start,
        "data_length": len(data),
        "meta_start": meta_start,
        "meta_length": len(metas),
        "index_start": index_start,
        "index_length": len(index),
        "file_count": len(members),
    }
    fields.update(footer_overrides or {})
    footer = FOOTER.pack(footer_magic, footer_version, reserved, *(fields[k] for k in FOOTER_FIELDS))
    blob = bytes(head + data + gaps[0] + metas + gaps[1] + index + gaps[2] + footer)
    externals = {m.external_key: m.data for m in members if m.external_key is not None}
    return V1Container(blob, fields, entry_offsets, externals)


def write_v1(members: Iterable[V1Member], **options: object) -> bytes:
    """Just the bytes of ``build_v1``."""
    return build_v1(members, **options).blob  # type: ignore[arg-type]


def read_footer(blob: bytes) -> dict[str, int]:
    """The seven u64 footer fields of a container."""
    return dict(zip(FOOTER_FIELDS, FOOTER.unpack_from(blob, len(blob) - FOOTER.size)[3:]))


def patch_footer(blob: bytes, **fields: int) -> bytes:
    """The container with some footer fields replaced."""
    magic, version, reserved, *_ = FOOTER.unpack_from(blob, len(blob) - FOOTER.size)
    values = read_footer(blob) | fields
    return blob[: -FOOTER.size] + FOOTER.pack(magic, version, reserved, *(values[k] for k in FOOTER_FIELDS))
