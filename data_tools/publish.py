"""Convert once, publish atomically.

A dataset folder is built under a temporary sibling name (`.NAME.partial-PID`) and renamed to its final name
only when complete, so an interrupted conversion leaves nothing under the final name. `manifest.json` records
a hash of everything the output depends on (source listing, options, generator version): a second identical
conversion finds it and returns at once; `force` rewrites.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

MANIFEST = "manifest.json"


class DatasetExistsError(RuntimeError):
    """The output folder holds something else; the message says what and how to proceed."""


def inputs_hash(inputs: dict[str, Any]) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_current(out_dir: Path, digest: str) -> bool:
    m = read_manifest(out_dir)
    return m is not None and m.get("inputs_hash") == digest


def publish(out_dir: str | Path, inputs: dict[str, Any], build: Callable[[Path], dict[str, Any]],
            force: bool = False) -> tuple[Path, bool]:
    """Builds the folder with `build(staging_dir)` unless it is already current.

    `build` writes every file into the staging folder and returns facts for the manifest. Returns
    (out_dir, built) where built is False when an identical conversion was already there.
    """
    out_dir = Path(out_dir).resolve()
    digest = inputs_hash(inputs)
    if not force and is_current(out_dir, digest):
        return out_dir, False
    if out_dir.exists() and not force:
        if not out_dir.is_dir():
            raise DatasetExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()):
            why = ("holds a dataset converted from other inputs or options" if read_manifest(out_dir)
                   else "is not empty and holds no grainsweep manifest")
            raise DatasetExistsError(f"{out_dir} {why}; pass --force to replace it, or choose another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        facts = build(staging)
        manifest = {"format": 1, "inputs_hash": digest, "inputs": inputs,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **facts}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir, True


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Renames staging to out_dir; an old out_dir is moved aside first and deleted after."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_partials(out_dir: Path) -> None:
    """Deletes leftovers of conversions into out_dir whose process is gone (killed runs)."""
    for kind in ("partial", "old"):
        for p in out_dir.parent.glob(f".{out_dir.name}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
