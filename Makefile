# Two commands for users: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cpu or gpu: which FAISS build to install.
FAISS ?= cpu
INSTALLED := $(VENV)/.installed-$(FAISS)

.PHONY: test demo install clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints/offline.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints/offline.txt --editable '.[$(FAISS),test]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest -q

# The demo: a real model (ImageNet EfficientNet-Lite0) and real photos (scikit-image's), all offline.
DEMO := var/demo
demo: $(INSTALLED)
	$(BIN)/python -m identify.demo $(DEMO) > /dev/null
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify convert-demo-model --out $(DEMO)/models/efficientnet_lite0_imagenet.pt
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify build-index --model $(DEMO)/models/efficientnet_lite0_imagenet.pt \
		--images $(DEMO)/gallery --name demo
	IDENTIFY_DATA_DIR=$(DEMO) $(BIN)/identify predict --model $(DEMO)/models/efficientnet_lite0_imagenet.pt \
		--index demo $(DEMO)/queries/*.jpg

clean:
	rm -rf $(VENV) var/demo
