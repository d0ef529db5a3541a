"""Any image file -> HxWx3 uint8 RGB, or a one-line reason why not; and a parallel pre-pass that finds the rejects.

Policies (README "Bad input"):
- every mode becomes RGB: grey (L, 1), CMYK (Pillow's plain conversion, ICC profiles are not applied), palette,
  YCbCr/LAB/HSV; 16-bit integers (I;16*, I) are scaled to 8 bits by round(v / 257) after clipping to 0..65535;
  32-bit floats (F) are clipped to 0..255;
- alpha (RGBA, LA, PA, palette transparency, premultiplied La/RGBa) is composited on white, out = a*rgb +
  (1-a)*255, rounded: transparent areas often hold black or junk colour that dropping the alpha would show;
- EXIF orientation is not applied (torchvision's ImageFolder does not either, so pixels match the usual loaders);
- JPEGs larger than the writer's max_resolution are decoded at a reduced DCT scale (Pillow's draft, the largest
  power-of-two reduction that keeps the image at least that size); the writer then resizes with INTER_AREA;
- a file is rejected if it is missing, empty, not an image, truncated or otherwise undecodable, or larger than
  Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS * 2 pixels).
Decoding is deterministic, so the pre-pass and the writer see the same result.
"""

from __future__ import annotations

import os
import time
import warnings
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from data_tools.workers import die_with_parent

BACKGROUND = 255  # value of the white that alpha is composited on
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


class BadImage(ValueError):
    """The file cannot become an RGB image; str(e) is the reason written to rejects.csv."""


def load(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decodes `path` to an HxWx3 uint8 RGB array, or raises BadImage with the reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, palette/ICC chatter
            with Image.open(path) as img:
                if max_side is not None and img.format == "JPEG":
                    img.draft(None, (max_side, max_side))
                img.load()  # full decode: truncation and corrupt data raise here
                return to_rgb(img)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing file") from None
    except IsADirectoryError:
        raise BadImage("is a folder, not a file") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"too large to decode safely ({e})") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error ...
        raise BadImage(f"cannot decode: {type(e).__name__}: {e}") from None


def to_rgb(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode as HxWx3 uint8 RGB (see the module docstring for the policy)."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)  # round(v / 257)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.rint(np.clip(np.asarray(img, dtype=np.float64), 0, 255)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)  # un-premultiplies La/RGBa
        a = rgba[..., 3:] / 255.0
        return np.rint(rgba[..., :3] * a + BACKGROUND * (1.0 - a)).astype(np.uint8)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def reason(path: str | os.PathLike, max_side: int | None = None) -> str | None:
    """None if `path` decodes, else why it does not."""
    try:
        load(path, max_side)
    except BadImage as e:
        return str(e)
    return None


def _reason_task(task: tuple[str, int | None]) -> str | None:
    return reason(*task)


def check_all(paths: Sequence[str | os.PathLike], max_side: int | None, workers: int,
              desc: str = "checking images") -> tuple[list[str | None], float]:
    """Decodes every file once (a pool of `workers` processes) -> (reason or None per path, seconds taken)."""
    t0 = time.perf_counter()
    tasks = [(str(p), max_side) for p in paths]
    with tqdm(total=len(tasks), desc=desc, unit="img", dynamic_ncols=True) as bar:
        if workers <= 1 or len(tasks) < 2:
            out = []
            for t in tasks:
                out.append(_reason_task(t))
                bar.update()
        else:
            # fork: workers share the parent's imports; chunks amortise the IPC of one small result per image
            chunk = max(1, min(256, len(tasks) // (workers * 8)))
            # and die with this process if it is killed (data_tools/workers.py)
            with get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                out = []
                for r in pool.imap(_reason_task, tasks, chunksize=chunk):
                    out.append(r)
                    bar.update()
    return out, time.perf_counter() - t0
