"""Readers of real dataset formats, one module per kind; each has `Options`, `WRITE` (its default image storage)
and `scan(src, options) -> Catalog` (see catalog.py)."""

from data_tools.sources import cifar100, csv_manifest, imagenet, inat2021

SOURCES = {"imagenet": imagenet, "inat2021": inat2021, "cifar100": cifar100, "csv": csv_manifest}
