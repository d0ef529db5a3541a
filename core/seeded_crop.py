"""A RandomResizedCrop decoder for ffcv whose crops are reproducible.

ffcv 1.0.2's RandomResizedCropRGBImageDecoder draws crops from numba's per-thread `np.random`, which nothing
seeds: two runs with the same seed see different crops, and a resumed run cannot replay an uninterrupted one.
This decoder reseeds the drawing thread before each sample from a hash of (run seed, the sample's index, the
first and last index of its batch). The batch's composition comes from ffcv's seeded order (a fresh
permutation every epoch for RANDOM), so crops change from epoch to epoch yet are a pure function of
(seed, epoch): same seed, same crops; resume at epoch e, same crops as an uninterrupted run.

The body of `generate_code` is ffcv's ResizedCropRGBImageDecoder.generate_code with the reseeding added.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ffcv.fields.rgb_image import (IMAGE_MODES, RandomResizedCropRGBImageDecoder, get_random_crop, imdecode,
                                   resize_crop)
from ffcv.pipeline.compiler import Compiler

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_ONE = np.uint64(1)


def _splitmix(state: np.uint64, value: np.uint64) -> np.uint64:
    """One splitmix64 round folding `value` into `state` (all uint64, wrapping)."""
    z = state + _GOLDEN * (value + _ONE)
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
    def __init__(self, output_size: tuple[int, int], seed: int, scale=(0.08, 1.0), ratio=(0.75, 4 / 3)):
        super().__init__(output_size, scale=scale, ratio=ratio)
        self.seed = int(seed)

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read = self.memory_read
        my_range = Compiler.get_iterator()
        imdecode_c = Compiler.compile(imdecode)
        resize_crop_c = Compiler.compile(resize_crop)
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
                height = np.uint32(field["height"])
                width = np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    selected_size = 3 * height * width
                    temp_buffer = temp_buffer.reshape(-1)[:selected_size]
                    temp_buffer = temp_buffer.reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                i, j, h, w = get_crop_c(height, width, scale, ratio)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
            return destination[:n]

        decode.is_parallel = True
        return decode
