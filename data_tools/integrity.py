"""Fingerprints of a dataset's betons, recorded in manifest.json at conversion and checked before "up to date".

A fingerprint is the file's size and a SHA-256 of its header region (ffcv header, field descriptors and the
start of the per-sample metadata table) and of its allocation table (where every sample's bytes lie, the
file's tail): truncation, a rewritten header or a lost tail are caught, and reading it costs a few tens of MB
at ImageNet scale (about 24 bytes a sample), not the whole file. A flipped byte inside image data is not.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

HEAD_BYTES = 1 << 20  # hashed from the start: header, field descriptors, first samples' metadata
_ALLOC_PTR = struct.Struct("<Q")  # ffcv HeaderType: version u2, num_fields u2, page_size u4, num_samples u8,
_ALLOC_PTR_OFFSET = 16  # ... then alloc_table_ptr u8 at byte 16 (ffcv/types.py)
_CHUNK = 8 << 20


def fingerprint(path: str | os.PathLike) -> dict:
    """{"bytes": size, "sha256": hash of the head and of the allocation table} of one beton."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        h.update(head)
        start = size
        if len(head) >= _ALLOC_PTR_OFFSET + _ALLOC_PTR.size:
            (ptr,) = _ALLOC_PTR.unpack_from(head, _ALLOC_PTR_OFFSET)
            start = min(max(int(ptr), len(head)), size)  # a pointer past the end hashes nothing more
        f.seek(start)
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


def check(folder: Path, expected: dict[str, dict | None]) -> str:
    """'' when every file matches its recorded fingerprint (None: only that it exists), else what differs."""
    for name, want in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if want is None:
            continue
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, {want.get('bytes')} when written"
        if fingerprint(path)["sha256"] != want.get("sha256"):
            return f"{name}'s header or allocation table changed since it was written"
    return ""
