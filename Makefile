# Two entry points for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DIST ?= dist

.PHONY: setup demo test splunk-app deb clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/fti demo --out demo-out

test: setup
	$(BIN)/python -m pytest -q -rs

# The Splunk add-on TA-fti, as dist/TA-fti and dist/TA-fti-<version>.tgz.
splunk-app: setup
	$(BIN)/python -m siem_integrations.splunk.build --out dist

# The Debian package dist/fti_<version>_<arch>.deb (docs/install.md); needs Debian's
# python3-venv and dpkg-deb.
deb:
	packaging/build-deb.sh $(DIST)

clean:
	rm -rf $(VENV) demo-out build dist *.egg-info
