# static-ingress-lab. Every target is a thin call into `lab` (see README.md).
#   make up      engine (installs docker.io as root on Debian when missing), then `lab up`: image, certs, the chain
#   make test    the whole test suite: unit, render and integration (brings the lab up as needed)
#   (test, unit and bench first compile the ALB simulator for the host's Python: `lab compile`)
#   make down / status / logs

PYTHON ?= python3
VENV   := .venv
LAB    := $(VENV)/bin/lab
PYTEST := $(VENV)/bin/pytest
TOPOLOGY ?= default

.PHONY: up down test status logs render venv unit fuzz bench

$(VENV)/.installed: pyproject.toml
	@echo "lab: creating $(VENV) and installing the lab's Python packages ..."
	@$(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

up: venv
	@$(LAB) engine
	@$(LAB) up --topology $(TOPOLOGY)

down: venv
	@$(LAB) down

status: venv
	@$(LAB) status

logs: venv
	@$(LAB) logs

render: venv
	@$(LAB) render

# Unit and render tests need no engine; integration tests start the engine and build the image.
test: venv
	@$(LAB) engine --test-tools
	@$(LAB) build
	@$(LAB) compile
	@LAB_NATIVE=1 $(PYTEST) -q tests

unit: venv
	@$(LAB) compile
	@LAB_NATIVE=1 $(PYTEST) -q tests/unit tests/render

# The property tests with new random examples each round (make test always uses the same ones).
FUZZ_ROUNDS ?= 5
fuzz: venv
	@$(LAB) compile
	@for round in $$(seq 1 $(FUZZ_ROUNDS)); do \
	  echo "lab: fuzz round $$round of $(FUZZ_ROUNDS) (random examples)"; \
	  LAB_NATIVE=1 $(PYTEST) -q -p no:cacheprovider --hypothesis-profile=explore \
	    $$(grep -l '@given' tests/unit/*.py) || exit 1; \
	done

# Benchmarks (not tests): simulator vs real HAProxy on the same pinned CPUs; prints ratios.
bench: venv
	@$(LAB) compile
	@$(VENV)/bin/python bench/nlb.py
	@$(VENV)/bin/python bench/alb.py
	@$(VENV)/bin/python bench/alb_path.py
