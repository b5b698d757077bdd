# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean mosquitto

$(BIN)/bms-emu: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-extras: $(BIN)/bms-emu
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/bms-emu
	$(BIN)/bms-emu run

# Mosquitto is a real part of the MQTT tests; install it from Debian when it is missing.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; } || \
	  echo "warning: mosquitto is missing and could not be installed"

test: $(VENV)/.test-extras mosquitto
	$(BIN)/ruff check bms protocol hil tests benchmarks
	$(BIN)/pytest -q --durations=8

bench: $(BIN)/bms-emu
	$(BIN)/python benchmarks/headless_rtf.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
