# Set-up commands that work on a fresh machine; each installs what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The mypyc-compiled build (setup.py): a snapshot of the packages with the clustering hot
# path compiled, kept out of the source tree (an extension module beside its .py would be
# imported instead of it) and rebuilt whenever a source changes.
COMPILED := build/mypyc
SOURCES := $(shell find newsflow producers processors sinks -name '*.py') setup.py pyproject.toml

.PHONY: install run test lint unit integration e2e bench compiled system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

# Without a C compiler the build fails: then everything runs the pure modules (slower,
# the same decisions) and the compiled-vs-pure test skips, saying why. Its errors are kept
# in build/mypyc-errors.log: one naming a source line (code mypyc cannot compile) fails
# that test instead, so `make test` does not pass on the pure modules by accident.
$(COMPILED)/.built: $(STAMP) $(SOURCES)
	@# (A minute or more of a quiet pip, which read as `make run` hanging.)
	@echo "building the compiled clustering modules into $(COMPILED): a minute or two," \
		"once after each change of the sources"
	rm -rf $(COMPILED) build/lib.* build/bdist.*  # else setuptools may reuse stale copies
	# The stamp is dated when the build starts: a source edited during it is newer, so the
	# next `make compiled` builds again (stamped at the end, it never would).
	mkdir -p build && touch build/.mypyc-started
	NEWSFLOW_MYPYC=1 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation \
		--target $(COMPILED) . 2> build/mypyc-errors.log \
	&& mv build/.mypyc-started $@ && rm build/mypyc-errors.log \
	|| { rm -rf $(COMPILED); cat build/mypyc-errors.log >&2; \
		echo "mypyc build failed: running the pure-Python modules"; }

compiled: $(COMPILED)/.built

# The main job: embedded broker, processors, SQLite sink, producers, web page, seed replay.
# The compiled build when there is one (its processes all import from it). Refused before
# the build when a service runs on this data folder (`newsflow status` exit code 0 or 1;
# 3 is "not running"): the build replaces build/mypyc, from which that service's children
# import when they start again (a recycle of the embedded broker restarts them). Any other
# code is status failing (2: a bad setting), said as its own error, not as a service. Nor
# is a build that is due made under processes that run from it (a `make run` on another
# data folder: its PYTHONPATH is the build's), which status does not see.
run: install
	@$(BIN)/newsflow status >/dev/null; code=$$?; \
	if [ $$code -eq 0 ] || [ $$code -eq 1 ]; then \
		echo "make run: newsflow runs on this data folder already (\`$(BIN)/newsflow" \
			"status\` says how, exit code $$code): stop it first; nothing was built" >&2; \
		exit 1; \
	elif [ $$code -ne 3 ]; then \
		echo "make run: \`$(BIN)/newsflow status\` failed (exit code $$code, why above);" \
			"nothing was built" >&2; \
		exit 1; fi
	@$(MAKE) --no-print-directory -q compiled || { \
		pids=$$(grep -lxzsF "PYTHONPATH=$(abspath $(COMPILED))" /proc/[0-9]*/environ \
			| cut -d/ -f3 | tr '\n' ' '); \
		if [ -n "$$pids" ]; then \
			echo "make run: processes run from $(COMPILED) (pid $${pids% }: \`newsflow run\` on" \
				"another data folder?), which the build due would replace under them: stop" \
				"them first; nothing was built" >&2; \
			exit 1; fi; }
	@$(MAKE) --no-print-directory compiled
	if [ -f $(COMPILED)/.built ]; then export PYTHONPATH=$(abspath $(COMPILED)); fi; \
		NEWSFLOW_STOP_WITH_PARENT=true exec $(BIN)/newsflow run

# Debian packages some tests use (headless Chromium, PostgreSQL 15); installed only where
# we may (root with apt-get), otherwise those tests skip and say why.
system-deps:
	@bash scripts/system-deps.sh

lint: install
	$(BIN)/ruff check newsflow producers processors sinks tests benchmarks
	$(BIN)/mypy

test: install system-deps lint compiled
	$(BIN)/pytest -q -ra

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

e2e: install
	$(BIN)/pytest -q tests/e2e

bench: install compiled
	$(BIN)/python benchmarks/clustering.py $(if $(wildcard $(COMPILED)/.built),--compiled)

# What the set-up builds; not the data folder (var/), which holds the stored incidents,
# the producers' state (the entries already published) and the articles carried over to
# the next start.
clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
