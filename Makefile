# grainsweep: every command a user needs. Set-up is incremental: stamps under .make/ skip what is done.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .make
# system libraries: ffcv builds against turbojpeg + opencv (pkg-config); WordNet 3.0 for ImageNet
# hierarchies; a one-node SLURM cluster (with munge) for the sweep tests
APT_PACKAGES := pkg-config libturbojpeg0-dev libopencv-dev wordnet-base wordnet-sense-index \
                slurmctld slurmd slurm-client munge
TORCH := torch==2.14.1 torchvision==0.29.1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DATA ?= data/synthetic
# the demo's dataset: must match dataset.* in launch/sweeps/default.yaml
DEMO_DATA ?= data/synthetic-demo
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean help
.DEFAULT_GOAL := help

help:
	@echo "make setup  - apt packages, .venv with grainsweep (editable), WordNet data for nltk"
	@echo "make test   - setup, then the whole pytest suite (starts a local SLURM cluster for its tests)"
	@echo "make demo   - setup, then the default job on the embedded synthetic data"
	@echo "make bench  - setup, then the benchmark suite (writes benchmarks/RESULTS.md)"
	@echo "make clean  - remove .venv, .make and data/"

setup: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/wordnet

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "apt: packages present"; else \
	  echo "apt: installing $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; fi
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip==25.3 setuptools==80.9.0 wheel==0.48.0
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

$(STAMPS)/wordnet: $(STAMPS)/venv data_tools/wordnet_data.py
	$(PY) -m data_tools.wordnet_data
	@touch $@

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/grainsweep convert synthetic --preset default --set synthetic.image_size=24 --set synthetic.fine_size=0.4 \
		--set 'synthetic.fine_strength=[0.8, 1.0]' --set synthetic.hard_common_strength=0.05 --out $(DEMO_DATA)
	$(VENV)/bin/grainsweep tree $(DEMO_DATA)
	$(VENV)/bin/grainsweep sweep default --executor local --report

bench: setup
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) $(STAMPS) data
