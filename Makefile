# Two commands for users: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu or gpu: which FAISS build to install.
FAISS ?= cpu
INSTALLED := $(VENV)/.installed-$(FAISS)

.PHONY: test test-fast test-long lint demo demo-photos install clean chromium

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints/offline.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints/offline.txt --editable '.[$(FAISS),test]'
	$(BIN)/identify taxonomy suggest sparrow --limit 1 > /dev/null  # builds the name index cache once (about 3 s)
	touch $@

test: lint chromium demo-photos
	$(BIN)/python -m pytest -q

# ruff (pyflakes, pycodestyle errors, bugbear), mypy over identify/ and index_builder/, and the README's
# generated blocks up to date: part of make test.
lint: $(INSTALLED)
	$(BIN)/ruff check identify index_builder tests benchmarks migrations
	$(BIN)/mypy
	$(BIN)/python -m identify.docs --check

# The inner loop: everything but slow, browser and PostgreSQL tests (under 90 s on 2 cores). Not what CI runs.
test-fast: $(INSTALLED) demo-photos
	$(BIN)/ruff check identify index_builder tests benchmarks migrations
	$(BIN)/python -m pytest -q -m "not slow and not browser and not postgres"

# Long runs, not part of make test: the API contract at CONTRACT_EXAMPLES generated requests per operation, mode
# and caller (make test runs 20), against identify serve on SQLite and two gunicorn workers on PostgreSQL.
CONTRACT_EXAMPLES ?= 300
test-long: $(INSTALLED)
	IDENTIFY_CONTRACT_EXAMPLES=$(CONTRACT_EXAMPLES) $(BIN)/python -m pytest -q tests/test_api_contract.py

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		{ echo "the browser tests need Chromium: sudo apt-get install chromium"; exit 1; }

# The demo: a real model (ImageNet EfficientNet-Lite0) and real bird photos (Debian's tuxpaint-stamps-default:
# photo cut-outs of 35 birds, set on backgrounds), all offline. Its curator and password stay across runs.
DEMO := var/demo
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 8000
DEMO_MODEL := $(DEMO)/models/efficientnet_lite0_imagenet.pt
STAMPS := /usr/share/tuxpaint/stamps/animals/birds
demo: $(INSTALLED) demo-photos
	$(BIN)/python -m identify.demo photos $(DEMO) > /dev/null
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify convert-demo-model --out $(DEMO_MODEL)
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify build-index --model $(DEMO_MODEL) --images $(DEMO)/gallery --name demo
	IDENTIFY_DATA_DIR=$(DEMO) IDENTIFY_MODEL=$(DEMO_MODEL) IDENTIFY_INDEX=demo $(BIN)/identify predict --json \
		$(DEMO)/queries > $(DEMO)/predictions.jsonl || true
	$(BIN)/python -m identify.demo summary $(DEMO) $(DEMO)/predictions.jsonl
	@IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/python -m identify.demo curator $(DEMO)
	IDENTIFY_DATA_DIR=$(DEMO) IDENTIFY_MODEL=$(DEMO_MODEL) IDENTIFY_INDEX=demo \
		$(BIN)/identify serve --host $(DEMO_HOST) --port $(DEMO_PORT)

# The demo's bird photos come from a Debian package: installed without asking when we may, else say how.
demo-photos:
	@test -d $(STAMPS) || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tuxpaint-stamps-default >/dev/null; } || \
		{ sudo -n true 2>/dev/null && sudo apt-get install -y -qq tuxpaint-stamps-default >/dev/null; } || \
		{ echo "make demo needs the bird photos of Debian's tuxpaint-stamps-default:"; \
		  echo "  sudo apt-get install tuxpaint-stamps-default   (or set IDENTIFY_DEMO_STAMPS to its animals/birds folder)"; \
		  exit 1; }

clean:
	rm -rf $(VENV) var/demo
