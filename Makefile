# The README's commands. Each one creates .venv and installs the pinned requirements when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser test book clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

browser:              ## Debian's chromium + chromedriver for the browser test (needs root; else it skips)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "chromium not installed (not root): the browser test will skip"

test: setup browser   ## the test suite (the slow end-to-end checks included)
	$(PY) -m pytest -q

book: setup           ## execute the notebooks (quick profile, and paper-profile pages from results/) and build the HTML into _build/html
	$(PY) -m dnnknn book

clean:
	rm -rf _build
