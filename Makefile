# Two commands set up a fresh machine and run:  `make explain`  and  `make test`.
# Everything is installed into .venv by the project's own files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the builds this machine's pip finds on local disk (timm
# imports torchvision; PyPI's torchvision does not load beside the CPU-only torch 2.13 file).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup browser explain test lint docs clean

$(BIN)/attnexplain: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[timm,torchvision,openclip,gradcam,torchcam,quantus,lrp-reference,coco,imagenet-seg,docs,browser,dev]"
# lxt (AttnLRP's reference, tests/relevance/test_lxt.py) without its heavy declared deps.
	$(BIN)/pip install --quiet --no-deps lxt==2.1
	touch $@

setup: $(BIN)/attnexplain

explain: setup  ## the main job: embedded model on embedded images -> figures in attnexplain-out/
	MPLBACKEND=Agg $(BIN)/attnexplain explain --out attnexplain-out

# The explorer's browser test drives Debian's headless Chromium; installed once, when missing
# (as root, or through passwordless sudo). Without apt the test skips and says why.
browser:  ## headless Chromium + chromedriver for the explorer's browser test
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
		:; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "no apt-get: the explorer's browser test will be skipped"; \
	elif [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo"); \
		($$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium chromium-driver) \
		|| echo "apt-get could not install chromium: the explorer's browser test will be skipped"; \
	else \
		echo "cannot apt-get install chromium chromium-driver (not root, no sudo): the explorer's browser test will be skipped"; \
	fi

test: setup browser  ## lint + the test suite (offline, a few minutes on 2 cores)
	$(BIN)/ruff check attnexplain tests benchmarks
	$(BIN)/ruff format --check attnexplain tests benchmarks
	MPLBACKEND=Agg HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 -m "not slow" -q

docs: setup
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) attnexplain-out site
