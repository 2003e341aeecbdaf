# The two commands a fresh machine needs:
#   make example   set up and run the example site (offline: SQLite + the built-in Patreon sandbox)
#   make test      set up and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PORT ?= 5000

.PHONY: example test lint docs screenshots bench clean translations

# everything the tests, the linters and the docs need
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# the runtime and what the example needs, no dev tools (a venv that has dev already has it all)
$(VENV)/.example-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[example]"
	touch $@

example: $(VENV)/.example-installed
	$(PY) -m example_site --port $(PORT)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check flask_patronlock example_site tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy example_site

docs: $(VENV)/.installed
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

# the README's picture (docs/_static/locked-post.png), taken by the browser journey (tests/browser/test_full_journey.py)
screenshots: $(VENV)/.installed
	PATRONLOCK_README_SCREENSHOT=1 $(PY) -m pytest -q -p no:cacheprovider tests/browser/test_full_journey.py -k sqlite

# flask-patronlock's own catalogue (domain flask_patronlock, see docs/i18n.rst): extract the marked strings (babel.cfg),
# update every language's .po, compile the .mo files the package ships
TRANSLATIONS := flask_patronlock/translations
PYBABEL_KEYWORDS := --no-default-keywords -k gettext -k ngettext:1,2 -k lazy_gettext -k N_ -k pl_ -k pl_n:1,2
translations: $(VENV)/.installed
	$(VENV)/bin/pybabel extract -F babel.cfg $(PYBABEL_KEYWORDS) --project flask-patronlock --no-location \
		--sort-output --omit-header -o $(TRANSLATIONS)/flask_patronlock.pot .
	$(VENV)/bin/pybabel update -D flask_patronlock -i $(TRANSLATIONS)/flask_patronlock.pot -d $(TRANSLATIONS) \
		--no-fuzzy-matching --ignore-obsolete
	$(VENV)/bin/pybabel compile -D flask_patronlock -d $(TRANSLATIONS) --statistics

bench: $(VENV)/.installed
	for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .mypy_cache .ruff_cache
