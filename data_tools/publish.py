"""Convert once, publish atomically, replace only what is ours.

A dataset folder is built under a temporary sibling name (`.NAME.partial-PID`) and renamed to its final name
only when complete, so an interrupted conversion leaves nothing under the final name. `manifest.json` records
a hash of everything the output depends on (source listing, options, generator version), the files written,
and a fingerprint of each beton (size, and a hash of its header and allocation table: data_tools/integrity.py).
A second identical conversion finds it and returns at once, unless a beton no longer matches its fingerprint
(damaged: refused, `force` rebuilds). `force` replaces only a folder that holds a grainsweep dataset and nothing
else; any other folder is refused whatever the flags. One writer at a time (core.format.lock): a second identical
conversion waits for the first; a conversion of other inputs into a folder being written is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from core.format.provenance import DISK_FULL

from core.format import lock
from core.format.derived import DIR_NAME as DERIVED_DIR
from core.format.hierarchy import FILENAME as HIERARCHY_FILE
from data_tools import integrity

MANIFEST = "manifest.json"
SAME_CONVERSION_WAIT_S = 6 * 3600  # an identical conversion in progress: wait for it, then find it up to date
OTHER_WRITER_WAIT_S = 120  # a `derive` registering a level holds the folder for seconds
# files of datasets written before the manifest listed its files (splits' betons and paths come from "splits")
LEGACY_FILES = {HIERARCHY_FILE, "config.yaml", "provenance.json", "rejects.csv"}


class DatasetExistsError(RuntimeError):
    """The output folder holds something else; the message says what and how to proceed."""


class DiskFullError(RuntimeError):
    """The file system ran out of space (or quota) while writing; nothing was published."""


def inputs_hash(inputs: dict[str, Any]) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def read_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def state(out_dir: Path, digest: str) -> tuple[str, str]:
    """(what out_dir is, why): 'absent', 'empty', 'foreign' (not ours to replace), 'other' (our dataset of other
    inputs), 'damaged' (these inputs, but an output changed since) or 'current'."""
    if not out_dir.exists():
        return "absent", ""
    if not out_dir.is_dir():
        return "foreign", "exists and is not a folder"
    entries = {p.name for p in out_dir.iterdir()}
    if not entries:
        return "empty", ""
    m = read_manifest(out_dir)
    if not isinstance(m, dict) or "inputs_hash" not in m or not (out_dir / HIERARCHY_FILE).is_file():
        return "foreign", "holds no grainsweep dataset (manifest.json + hierarchy.json)"
    splits = m.get("splits") or {}
    ours = set(m.get("files") or LEGACY_FILES | {f"{s}{x}" for s in splits for x in (".beton", "_paths.txt")})
    unknown = sorted(entries - ours - {MANIFEST, DERIVED_DIR})
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        return "foreign", f"holds files grainsweep did not write ({shown})"
    if m["inputs_hash"] != digest:
        return "other", "holds a dataset converted from other inputs or options"
    problem = integrity.check(out_dir, m.get("outputs") or {f"{s}.beton": None for s in splits})
    return ("damaged", problem) if problem else ("current", "")


def publish(out_dir: str | Path, inputs: dict[str, Any], build: Callable[[Path], dict[str, Any]],
            force: bool = False) -> tuple[Path, bool]:
    """Builds the folder with `build(staging_dir)` unless it is already current.

    `build` writes every file into the staging folder and returns facts for the manifest. Returns
    (out_dir, built) where built is False when an identical conversion was already there.
    """
    out_dir = Path(out_dir).resolve()
    digest = inputs_hash(inputs)
    what = f"convert {digest[:16]}"
    held = lock.owner(out_dir) or {}
    wait = (SAME_CONVERSION_WAIT_S if held.get("what") == what
            else 0 if str(held.get("what", "")).startswith("convert") else OTHER_WRITER_WAIT_S)
    try:
        with lock.FolderLock(out_dir, what=what, wait_s=wait):
            return _publish_locked(out_dir, digest, inputs, build, force)
    except lock.LockedError as e:
        raise DatasetExistsError(f"{e}; a conversion of other inputs or options into it is refused") from None


def _publish_locked(out_dir: Path, digest: str, inputs: dict, build: Callable, force: bool) -> tuple[Path, bool]:
    kind, why = state(out_dir, digest)
    if kind == "current" and not force:
        return out_dir, False
    if kind == "foreign":
        raise DatasetExistsError(f"{out_dir} {why}; it is not replaced, even with --force: choose another --out")
    if kind == "other" and not force:
        raise DatasetExistsError(f"{out_dir} {why}; pass --force to replace it, or choose another --out")
    if kind == "damaged" and not force:
        raise DatasetExistsError(f"{out_dir} holds this conversion but it is damaged ({why}); "
                                 f"pass --force to rebuild it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        facts = build(staging)
        manifest = {"format": 1, "inputs_hash": digest, "inputs": inputs,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **facts,
                    "files": sorted(p.name for p in staging.iterdir()),
                    "outputs": {p.name: integrity.fingerprint(p) for p in sorted(staging.glob("*.beton"))}}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
        _swap_in(staging, out_dir)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if e.errno in DISK_FULL:
            raise DiskFullError(f"no space left on the device of {out_dir.parent} while writing "
                                         f"{out_dir.name}; nothing was published and the partial folder was "
                                         f"removed: free some space, or choose an --out on another disk") from None
        raise
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
            if pid.isdigit() and not lock.pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
