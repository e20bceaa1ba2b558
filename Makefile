# The two commands of the README. Everything lands in .venv; nothing is installed system-wide.
VENV ?= .venv
HPO = $(VENV)/bin/hpo

.PHONY: install run test clean

install:
	@bash scripts/install.sh

# The main job on the embedded default: the quickstart study on SQLite (./hpo.db), then the list.
run: install
	$(HPO) run --study quickstart --trials 20
	$(HPO) studies

test: install
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache artifacts
