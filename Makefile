# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
# The stamp installs the test, docs, ray and sources extras: `make test` also builds the documentation strictly,
# runs the examples and the RayCluster tests on a Ray it starts, and the source adapters' tests against
# a redis-server and a PostgreSQL they start.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DATA ?= ./data
PORT ?= 8000

.PHONY: install run test docs bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs,ray,sources]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Serves the example modules: the web UI, the HTTP API and a curl example are printed; Ctrl-C stops.
# (The in-process tour of the same modules is `python -m examples.tour`.)
run: $(STAMP)
	$(PY) -m headwater.cli serve examples/app.py --data $(DATA) --port $(PORT)

# ruff and mypy check the package first (seconds; their settings are in pyproject.toml). The
# browser tests drive Debian's chromium, the source adapters' tests Debian's redis-server and
# postgresql, and the JavaScript client's tests (clients/js) node 20 or later with npm: install them
# when missing (as root, or with passwordless sudo); if that is impossible those tests skip and say why.
test: $(STAMP)
	$(PY) -m ruff check headwater
	$(PY) -m mypy headwater
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	  test -x /usr/bin/chromium || echo "make test: could not install chromium (needs root and apt-get); the browser tests will skip"; }
	@{ command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql redis-server >/dev/null; \
	  fi; \
	  command -v redis-server >/dev/null || echo "make test: could not install redis-server; the RedisStream tests will skip"; }
	@{ command -v node && command -v npm; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	  fi; \
	  command -v npm >/dev/null || echo "make test: could not install nodejs and npm; the JavaScript client's tests will skip"; }
	$(PY) -m pytest -q

# The documentation site (MkDocs Material + mkdocstrings) into site/; --strict turns every warning
# (a broken link, an unknown API reference) into a failure. tests/docs/test_site.py builds it in `make test`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# Benchmarks against PostgreSQL, Redis, eventsourcing and bytewax (docs/benchmarks.md, docs/bench/*.png):
# installs the bench extra and, when missing, Debian's postgresql and redis-server (as root or with
# passwordless sudo). About 15 minutes; `make bench BENCH_ARGS=--quick` takes about 5.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	@{ command -v redis-server >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "make bench: install postgresql and redis-server first (apt-get install -y postgresql redis-server)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql redis-server >/dev/null; }
	$(PY) -m bench.suite $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DATA) build site *.egg-info
