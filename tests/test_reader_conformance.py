"""Both container readers (v2 ContainerReader, DES v1 DesV1Reader) pass the one conformance suite."""

from __future__ import annotations

import io
from collections.abc import Sequence

from container_conformance import ReaderConformance, Spec
from des_v1_writer import V1Member, build_v1

from desq.container import ContainerWriter, external_checksums
from desq.layout import LAYOUT_VERSION


def _external_key(name: str) -> str:
    return f"big/{name.encode('utf-8').hex()}"


class TestContainerReader(ReaderConformance):
    VERSION = 2
    LAYOUT_VERSION = LAYOUT_VERSION
    CHECKSUMS = True
    EXTERNALS_LAST = False
    INDEX_BYTES_PER_MEMBER = 24
    MERGEABLE = True

    def write(self, specs: Sequence[Spec]) -> tuple[bytes, dict[str, bytes]]:
        out, objects = io.BytesIO(), {}
        with ContainerWriter(out) as writer:
            for spec in specs:
                if not spec.external:
                    writer.add(spec.name, spec.data, content_type=spec.content_type)
                    continue
                key = _external_key(spec.name)
                blocks, crc = external_checksums([spec.data], len(spec.data))
                writer.add_external(spec.name, size=len(spec.data), checksum=crc, block_checksums=blocks, external_key=key, content_type=spec.content_type)
                objects[key] = spec.data
        return out.getvalue(), objects


class TestDesV1Reader(ReaderConformance):
    VERSION = 1
    LAYOUT_VERSION = None  # DES v1 records no layout version
    CHECKSUMS = False  # DES v1 stores no checksums
    EXTERNALS_LAST = True  # DES v1 lists members by data offset, then the external ones by name
    INDEX_BYTES_PER_MEMBER = 128  # an estimate: the entries and the META+INDEX bytes it keeps
    MERGEABLE = False  # no v2 frames to copy: ContainerWriter.merge refuses it

    def write(self, specs: Sequence[Spec]) -> tuple[bytes, dict[str, bytes]]:
        container = build_v1(
            V1Member(spec.name, spec.data, mime=spec.content_type, external_key=_external_key(spec.name) if spec.external else None)
            for spec in specs
        )
        return container.blob, container.externals
