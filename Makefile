# omlmedia — two commands set everything up on a fresh Debian/Ubuntu machine:
#   make run    set up and start the server on its embedded demo configuration
#   make test   set up (with the test peers), then lint, type-check and run every test
# `make run` installs only what the server needs (`pip install -e .`); `make test` adds the test
# tools (`.[test]`). Each has its stamp in the venv, so neither reinstalls after the other needlessly.

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(VENV)/bin/pip
ARGS     ?=

# System packages: what the server needs, and what the tests drive as real peers.
RUN_DEBS  := libopus0 ca-certificates
TEST_DEBS := $(RUN_DEBS) sip-tester baresip chromium systemd docker-compose postgresql kamailio nftables iproute2 fail2ban coturn redis-server haproxy rtpengine-daemon tcpdump

.PHONY: run test setup setup-test system-run system-test lint typecheck pytest bench clean

run: setup
	$(VENV)/bin/omlmedia serve $(ARGS)

test: setup-test lint typecheck pytest

setup: system-run $(VENV)/.installed-run
setup-test: system-test $(VENV)/.installed-test

system-run:
	@scripts/install-debs.sh $(RUN_DEBS)

system-test:
	@scripts/install-debs.sh $(TEST_DEBS)
	@# Debian enables (and, under systemd, starts) a system-wide kamailio on 5060 at install; the
	@# tests run their own instances on free ports, so that one is disabled and stopped.
	@if [ -e /lib/systemd/system/kamailio.service ] && [ "$$(id -u)" = 0 ]; then \
		systemctl disable kamailio >/dev/null 2>&1 || true; \
		systemctl stop kamailio >/dev/null 2>&1 || true; \
	fi
	@# The same for redis-server (6379) and haproxy: the cluster tests start their own.
	@for unit in redis-server haproxy; do \
		if [ -e /lib/systemd/system/$$unit.service ] && [ "$$(id -u)" = 0 ]; then \
			systemctl disable $$unit >/dev/null 2>&1 || true; \
			systemctl stop $$unit >/dev/null 2>&1 || true; \
		fi; \
	done

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The server's dependencies only; editable, as the tree is what `make run` runs.
$(VENV)/.installed-run: setup.cfg setup.py pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

# The same plus the test tools: a superset, so it stands for the server's stamp too.
$(VENV)/.installed-test: setup.cfg setup.py pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $(VENV)/.installed-run $@

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy sip queueing media omlmedia webrtc

pytest:
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=40

bench: export PYTHONPATH := $(CURDIR)
bench: setup-test
	$(PY) benchmarks/media_engine.py
	$(PY) benchmarks/conference.py
	$(PY) benchmarks/webrtc_receive.py
	$(PY) benchmarks/ua_core.py
	$(PY) benchmarks/acd.py
	$(PY) benchmarks/sip_cps.py
	$(PY) benchmarks/media_relay.py
	$(PY) benchmarks/kernel_relay.py
	$(PY) benchmarks/kernel_sipp.py
	$(PY) benchmarks/webrtc_bridge.py
	$(PY) benchmarks/acd_e2e.py
	$(PY) benchmarks/events.py
	$(PY) benchmarks/storage.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
