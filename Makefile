# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean mosquitto

# The tests start hundreds of `bms-emu` processes: with bytecode not written (a setting some
# machines have), each one would compile every source file again.
unexport PYTHONDONTWRITEBYTECODE
# Test workers: half again as many as cores, since about a quarter of a worker's time is
# spent waiting on the processes, brokers and pseudo-terminals its tests drive.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 3 / 2 )))

# The venv with the package installed editable, with the extras given (once: a fresh
# clone's `make test` installs the test extras in one go). uv installs them in a third of
# pip's time; where uv cannot be had or cannot reach an index, pip does it.
define install
	$(PYTHON) -m venv $(VENV)
	{ $(BIN)/pip install --quiet uv && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.$(1)'; } || \
	{ $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.$(1)'; }
endef

$(BIN)/bms-emu: pyproject.toml
	$(call install,)
	touch $@

$(VENV)/.test-extras: pyproject.toml
	$(call install,[test])
	touch $@ $(BIN)/bms-emu

run: $(BIN)/bms-emu
	$(BIN)/bms-emu run

# Mosquitto is a real part of the MQTT tests: install the broker and its clients from Debian
# when either is missing. Failing to is an error, the tests must not pass without a broker.
MOSQUITTO_OK = { { [ -x /usr/sbin/mosquitto ] || command -v mosquitto; } && command -v mosquitto_sub; } >/dev/null 2>&1
mosquitto:
	@$(MOSQUITTO_OK) && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; else sudo="sudo -n"; fi; \
	echo "installing mosquitto and mosquitto-clients with apt-get"; \
	{ command -v apt-get >/dev/null 2>&1 && $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; } && $(MOSQUITTO_OK) || \
	{ echo "error: Mosquitto is missing and could not be installed;" \
	    "run: apt-get install mosquitto mosquitto-clients (as root)" >&2; exit 1; }

test: $(VENV)/.test-extras mosquitto
	$(BIN)/ruff check bms bms_emu protocol hil tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=8

bench: $(BIN)/bms-emu
	$(BIN)/python benchmarks/headless_rtf.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
