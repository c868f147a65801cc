"""docs/format.md states the format's numbers and a test vector: hold the code to them."""

from __future__ import annotations

import io
import re
from pathlib import Path

from desq.container import ContainerWriter
from desq.container import format as fmt

DOC = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text(encoding="utf-8")


def test_the_documented_test_vector() -> None:
    block = DOC.split("## Test vector", 1)[1].split("```")[1]
    documented = "".join(re.findall(r"^([0-9a-f]+)", block, flags=re.M))
    out = io.BytesIO()
    with ContainerWriter(out, layout_version=1) as w:
        w.add("a", b"hello")
    assert out.getvalue().hex() == documented and len(out.getvalue()) == 141


def test_documented_constants() -> None:
    assert f"magic `{fmt.HEADER_MAGIC.decode()}`" in DOC and f"magic `{fmt.FOOTER_MAGIC.decode()}`" in DOC
    assert f"frame magic `{fmt.FRAME_MAGIC.decode()}`" in DOC
    assert fmt.HEADER_SIZE == 16 and fmt.FOOTER_SIZE == 64 and fmt.ENTRY_SIZE == 24 and fmt.HEAD_FIXED.size == 20
    assert f"`20251120_1` → `{fmt.name_hash(b'20251120_1'):#018x}`" in DOC
    assert fmt.MAX_NAME_BYTES == 1024 and fmt.MAX_META_BYTES == 8192 and fmt.MAX_BLOCKS == 8192
