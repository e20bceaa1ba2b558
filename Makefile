# The two commands of the README. Python packages land in .venv; the tests also need Debian's chromium.
VENV ?= .venv
HPO = $(VENV)/bin/hpo

.PHONY: install run test clean

install:
	@bash scripts/install.sh

# The main job on the embedded default: the quickstart study on SQLite (./hpo.db), then the list.
run: install
	$(HPO) run --study quickstart --trials 20
	$(HPO) studies

# The browser tests drive Debian's chromium; install-browser.sh adds it (as root) when missing.
test: install
	@bash scripts/install-browser.sh
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache artifacts
