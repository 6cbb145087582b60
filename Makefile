# Two commands for users: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu or gpu: which FAISS build to install.
FAISS ?= cpu
INSTALLED := $(VENV)/.installed-$(FAISS)

.PHONY: test demo install clean chromium

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints/offline.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints/offline.txt --editable '.[$(FAISS),test]'
	$(BIN)/identify taxonomy suggest sparrow --limit 1 > /dev/null  # builds the name index cache once (about 3 s)
	touch $@

test: $(INSTALLED) chromium
	$(BIN)/python -m pytest -q

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		{ echo "the browser tests need Chromium: sudo apt-get install chromium"; exit 1; }

# The demo: a real model (ImageNet EfficientNet-Lite0) and real photos (scikit-image's), all offline.
DEMO := var/demo
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
demo: $(INSTALLED)
	$(BIN)/python -m identify.demo $(DEMO) > /dev/null
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify convert-demo-model --out $(DEMO)/models/efficientnet_lite0_imagenet.pt
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify build-index --model $(DEMO)/models/efficientnet_lite0_imagenet.pt \
		--images $(DEMO)/gallery --name demo
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify predict --model $(DEMO)/models/efficientnet_lite0_imagenet.pt \
		--index demo $(DEMO)/queries/*.jpg
	@echo "A curator for the review queue (log in at /login):"
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify create-curator demo --generate-password --reset
	IDENTIFY_DATA_DIR=$(DEMO) IDENTIFY_MODEL=$(DEMO)/models/efficientnet_lite0_imagenet.pt IDENTIFY_INDEX=demo \
		$(BIN)/identify serve --host $(DEMO_HOST) --port $(DEMO_PORT)

clean:
	rm -rf $(VENV) var/demo
