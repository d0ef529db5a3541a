"""ffcv image decoders for grainsweep: reproducible random crops, and JPEG decoding at a reduced DCT scale.

Reproducible crops. ffcv 1.0.2's RandomResizedCropRGBImageDecoder draws crops from numba's per-thread
`np.random`, which nothing seeds: two runs with the same seed see different crops, and a resumed run cannot replay
an uninterrupted one. `SeededRandomResizedCrop` reseeds the drawing thread before each sample from a hash of (run
seed, the sample's index, the first and last index of its batch). The batch's composition comes from ffcv's
seeded order (a fresh permutation every epoch for RANDOM), so crops change from epoch to epoch yet are a pure
function of (seed, epoch): same seed, same crops; resume at epoch e, same crops as an uninterrupted run.

Reduced-scale decoding. A crop that is resized *down* to the output does not need every pixel of the JPEG:
libjpeg-turbo can decode at k/8 of the stored size in the DCT domain, skipping most of the inverse DCT, colour
conversion and the INTER_AREA reduction afterwards. Both decoders here draw the crop first (in stored pixels,
the same draw as before), pick the smallest k of 1, 2, 4 (the fast scales, see `dct_eighths`) whose scaled crop
still covers the output size, else 8, and decode at that scale through ffcv's own `imdecode` (its
`scale_factor_num/denom` arguments, which ffcv itself always sets to 1/1; TurboJPEG picks the scale from the
size asked, TJSCALED = ceil(size * k / 8)). The crop box is mapped to the scaled image (each edge to the
nearest scaled pixel: under half an output pixel off) and resized with ffcv's `resize_crop` as before. For
crops of 256 px images k is 8 at 160 and 224 px (nothing changes); at 64 px most crops decode at 1/4 or 1/2.
Raw (uncompressed) images are cropped as stored. The output is not bit-equal to a full decode + INTER_AREA (a
different, also antialiased, reduction): tests/test_scaled_decode.py bounds the difference. Measured gains are
in benchmarks/RESULTS.md.

The bodies of `generate_code` follow ffcv's ResizedCropRGBImageDecoder.generate_code.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ffcv.fields.rgb_image import (IMAGE_MODES, CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder,
                                   get_center_crop, get_random_crop, imdecode, resize_crop)
from ffcv.pipeline.compiler import Compiler

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_ONE = np.uint64(1)
DCT_EIGHTHS = 8  # libjpeg-turbo scales by k/8
ASPECT_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect range (torchvision's and ffcv's default)


def _splitmix(state: np.uint64, value: np.uint64) -> np.uint64:
    """One splitmix64 round folding `value` into `state` (all uint64, wrapping)."""
    z = state + _GOLDEN * (value + _ONE)
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def dct_eighths(crop_h: int, crop_w: int, out_h: int, out_w: int) -> int:
    """The smallest k of 1, 2, 4 such that a crop of crop_h x crop_w stored pixels, decoded at k/8, still has at
    least out_h x out_w pixels; else 8 (the full scale).

    Only 1/8, 1/4 and 1/2 are cheaper than a full decode: libjpeg-turbo's reduced IDCTs for them are SIMD, while
    3/8, 5/8, 3/4 and 7/8 run a generic scaled IDCT that is slower than the full-size SIMD one (one thread, the
    suite's 256 px q90 JPEGs: 1/8 3,237, 1/4 2,409, 1/2 2,505, 5/8 1,752, 3/4 1,345, 7/8 1,402, 8/8 2,058
    decodes/s; with 5/8-7/8 allowed the loader at 160 px fell from ~2,400 to ~1,600 img/s)."""
    k = 1
    while k < DCT_EIGHTHS:
        if crop_h * k >= DCT_EIGHTHS * out_h and crop_w * k >= DCT_EIGHTHS * out_w:
            return k
        k *= 2
    return DCT_EIGHTHS


def _scaled(n: int, k: int) -> int:
    """TurboJPEG's TJSCALED: a side of n stored pixels decoded at k/8."""
    return (n * k + DCT_EIGHTHS - 1) // DCT_EIGHTHS


def _crop_decoder() -> Callable:
    """A compiled function writing the crop rows i:i+h, columns j:j+w (stored pixels) of one image, resized, into
    `destination` (decoding a JPEG at the smallest DCT scale that keeps the crop at least the output size)."""
    imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
    eighths_c, scaled_c = Compiler.compile(dct_eighths), Compiler.compile(_scaled)
    eighths = DCT_EIGHTHS

    def decode_crop(image_data, is_jpeg, height, width, i, j, h, w, temp, destination):
        if not is_jpeg:
            resize_crop_c(image_data.reshape(height, width, 3), i, i + h, j, j + w, destination)
            return
        k = eighths_c(h, w, np.int64(destination.shape[0]), np.int64(destination.shape[1]))
        sh, sw = scaled_c(height, k), scaled_c(width, k)
        # ffcv ignores imdecode's status and would serve whatever a damaged JPEG left in `temp`; raising ends the
        # epoch instead (core/data/ffcv_loader.py names the beton and the row)
        if imdecode_c(image_data, temp, height, width, height, width, 0, 0, k, eighths, False, False) != 0:
            raise ValueError("TurboJPEG cannot decode an image")
        scaled = temp.reshape(-1)[:sh * sw * 3].reshape(sh, sw, 3)
        # the crop box in scaled pixels, each edge rounded to the nearest (scaled pixel p covers stored pixels
        # 8p/k .. 8(p+1)/k): at most half a scaled pixel off, i.e. under half an output pixel
        half = eighths // 2
        i0, j0 = (i * k + half) // eighths, (j * k + half) // eighths
        i1, j1 = min(sh, ((i + h) * k + half) // eighths), min(sw, ((j + w) * k + half) // eighths)
        resize_crop_c(scaled, i0, i1, j0, j1, destination)

    return Compiler.compile(decode_crop)


class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
    """RandomResizedCrop with crops a pure function of (seed, epoch), decoding JPEGs at a reduced DCT scale."""

    def __init__(self, output_size: tuple[int, int], seed: int, scale: tuple[float, float],
                 ratio: tuple[float, float] = ASPECT_RATIO):
        super().__init__(output_size, scale=scale, ratio=ratio)
        self.seed = int(seed)

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        crop_c = _crop_decoder()
        get_crop_c = Compiler.compile(get_random_crop)
        mix = Compiler.compile(_splitmix)
        scale = np.array(self.scale, dtype=np.float64)
        ratio = np.array(self.ratio, dtype=np.float64)
        seed = np.uint64(self.seed & 0xFFFFFFFFFFFFFFFF)
        shift = _S32

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            n = len(batch_indices)
            batch_key = mix(mix(seed, np.uint64(batch_indices[0])), np.uint64(batch_indices[n - 1]))
            for dst_ix in my_range(n):
                source_ix = batch_indices[dst_ix]
                h64 = mix(batch_key, np.uint64(source_ix))
                np.random.seed(np.uint32(h64 >> shift))  # seeds the thread that decodes this sample
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.int64(field["height"])
                width = np.int64(field["width"])
                i, j, h, w = get_crop_c(height, width, scale, ratio)  # the draw does not depend on the decode
                crop_c(image_data, field["mode"] == jpg, height, width, np.int64(i), np.int64(j), np.int64(h),
                       np.int64(w), temp_storage[dst_ix], destination[dst_ix])
            return destination[:n]

        decode.is_parallel = True
        return decode


class ScaledCenterCrop(CenterCropRGBImageDecoder):
    """ffcv's CenterCropRGBImageDecoder (centre square of `ratio` x the short side), decoding JPEGs at a reduced
    DCT scale."""

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        crop_c = _crop_decoder()
        get_crop_c = Compiler.compile(get_center_crop)
        ratio = float(self.ratio)

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, temp_storage = my_storage
            n = len(batch_indices)
            for dst_ix in my_range(n):
                field = metadata[batch_indices[dst_ix]]
                image_data = mem_read(field["data_ptr"], storage_state)
                height = np.int64(field["height"])
                width = np.int64(field["width"])
                i, j, h, w = get_crop_c(height, width, None, ratio)
                crop_c(image_data, field["mode"] == jpg, height, width, np.int64(i), np.int64(j), np.int64(h),
                       np.int64(w), temp_storage[dst_ix], destination[dst_ix])
            return destination[:n]

        decode.is_parallel = True
        return decode
