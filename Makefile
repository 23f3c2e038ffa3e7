# Two commands do everything from a fresh clone: `make demo` and `make test`.
# Each creates .venv if missing, installs the project with its dependencies, and
# (demo) synthesizes the default dataset if missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   := data/synth-sc
# torch 2.14.1 with torchaudio 2.11.0 is the verified pair (torchaudio's transforms and resampler).
TORCH  := "torch==2.14.1" "torchaudio==2.11.0"

# Festival and the voices the synthetic corpus speaks with (Debian packages; `pld data synth` names
# what is missing). Installed with apt-get when absent: as root, or through sudo.
FESTIVAL := festival festvox-kdlpc16k festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-czech-krb \
            festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru
# MBROLA's engine (distill/corpus/mbrola.py): Debian's espeak-ng (main), mbrola (contrib) and its
# voices (non-free: free for non-commercial use), less us3, de1 and sw2 (they lack diphones the
# corpus's words need). contrib and non-free are enabled in their own sources file when absent.
MBROLA := espeak-ng mbrola $(addprefix mbrola-,us1 us2 en1 af1 de2 de3 de4 de5 de6 fr1 fr4 gr2 hu1 nl2 pl1 ro1 sw1)
# RHVoice (distill/corpus/rhvoice.py): its engine and English voices (non-free).
RHVOICE := rhvoice rhvoice-english
APT_EXTRA := /etc/apt/sources.list.d/pld-contrib-non-free.sources
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-unit test-integration install system browser data teacher-data study-data gpu-bundle clean

install: system $(VENV)/.installed

system:
	@dpkg -s $(FESTIVAL) $(MBROLA) $(RHVOICE) >/dev/null 2>&1 || { echo "installing Festival, MBROLA, RHVoice and their voices with apt-get"; \
	  if ! apt-cache policy mbrola | grep -q 'Candidate: [0-9]' && [ ! -e $(APT_EXTRA) ]; then \
	    . /etc/os-release; [ "$$ID" = debian ] || { echo "enable the contrib and non-free components for mbrola"; exit 1; }; \
	    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
	      "$$VERSION_CODENAME" | $(SUDO) tee $(APT_EXTRA) >/dev/null; fi; \
	  $(SUDO) apt-get update -q >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(FESTIVAL) $(MBROLA) $(RHVOICE) >/dev/null; }

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e ".[test]"
	# benchmarks/speech_embedding.py: Google's speech embedding as ONNX, inside this wheel (its deps unneeded)
	$(BIN)/python -m pip install -q --no-deps openwakeword==0.5.1
	# model moonshine: Moonshine's English base encoder (.ort, MIT), read with our onnxruntime; its own runtime unused
	$(BIN)/python -m pip install -q --no-deps moonshine-cpp==0.1.4
	touch $@

data: $(DATA)/synth.json

$(DATA)/synth.json: | $(VENV)/.installed
	$(BIN)/pld data synth --out $(DATA) --speakers 300 --val-fraction 0.3 --test-fraction 0.3 --unknown-words 10

# configs/ensemble_teacher.yaml's corpus: 480 training speakers (MBROLA's voices among the engines),
# its held-out parts as the default corpus's (the same unseen accents, engines and sizes).
teacher-data: data/synth-sc-480/synth.json

data/synth-sc-480/synth.json: | $(VENV)/.installed
	$(BIN)/pld data synth --out data/synth-sc-480 --seed 1 --speakers 660 --val-fraction 0.1364 \
	  --test-fraction 0.1364 --unknown-words 10 --engines espeak=2,festival=1,pico=1,mbrola=1 \
	  --heldout-val-voices en-gb-x-gbclan --heldout-test-voices en-029,en-us-nyc

# The decisive study's other two corpora (studies/decisive.yaml): the same speakers, each word
# placed anywhere in its clip, at its own length and at 0.6 of it.
SYNTH_STUDY := $(BIN)/pld data synth --speakers 300 --val-fraction 0.3 --test-fraction 0.3 --unknown-words 10 \
               --placement uniform
study-data: data data/synth-sc-uniform/synth.json data/synth-sc-short/synth.json

data/synth-sc-uniform/synth.json: | $(VENV)/.installed
	$(SYNTH_STUDY) --out data/synth-sc-uniform

data/synth-sc-short/synth.json: | $(VENV)/.installed
	$(SYNTH_STUDY) --out data/synth-sc-short --word-duration 0.6

demo: install data
	$(BIN)/pld run configs/quickstart.yaml

test: install browser
	$(BIN)/python -m pytest

# The MLflow UI test drives headless Chromium (Debian's package); without it that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Chromium for the MLflow UI test"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "could not install chromium: the MLflow UI test will skip"; }

test-unit: install  # the fast tests of one module each (no Ray cluster)
	$(BIN)/python -m pytest tests/unit

test-integration: install browser  # real Ray and MLflow (minutes)
	$(BIN)/python -m pytest tests/integration

# What a GPU machine that reaches no package index lacks, in one file that travels with a device
# call: PLD_SITE=.gpu-bundle/site.tar.xz benchmarks/gpu_check.sh OUT (docs/benchmarks.md, "The GPU check").
gpu-bundle: install
	$(BIN)/python benchmarks/gpu_bundle.py --out .gpu-bundle

clean:
	rm -rf pld-runs mlflow.db mlruns mlartifacts
