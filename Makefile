# Two commands on a fresh Debian 12 machine, as root:  make demo  /  make test
# Both install what they need; both are safe to run twice.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := keepalived haproxy iproute2 psmisc hatop tmux wrk procps python3-venv gcc python3-dev
# The relay modules compiled with mypyc (tools/build_native.py); rebuilt when they change.
NATIVE_SRC := keeplb/lb/server.py keeplb/lb/balance.py keeplb/lb/reactor.py keeplb/lb/proxy.py \
	keeplb/lb/_fdsock.c keeplb/lb/_shared.c \
	keeplb/lb/native.py tools/build_native.py
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all deps apt venv native demo test lint typecheck unit check-examples bench clean install

all: test

# Checked every time (dpkg -s is cheap), so a package removed since is installed again.
apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the Debian units would start the originals on the host; keeplb's tests run them in namespaces only
	-@systemctl disable --now keepalived haproxy >/dev/null 2>&1 || true

# The stamp lives inside the venv: removing .venv removes it too.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test,demo]'
	@touch $@

# The stamp is in the venv too; a failed build leaves the sources running.
native: $(VENV)/.native
$(VENV)/.native: $(VENV)/.installed $(NATIVE_SRC)
	$(PY) tools/build_native.py >/dev/null
	@touch $@

deps: apt venv native

demo: deps
	$(VENV)/bin/keeplb demo $(DEMO_ARGS)

check-examples: deps
	$(VENV)/bin/keeplb check examples/*

lint: venv
	$(VENV)/bin/ruff check keeplb tests bench tools
	$(VENV)/bin/mypy

test: deps lint
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

unit: venv
	$(VENV)/bin/pytest -q tests/unit

bench: deps
	$(PY) bench/lbbench.py
	$(PY) bench/failover.py

install: deps
	install -d /etc/keeplb
	install -m 0644 packaging/keeplb-lb.service packaging/keeplb-vrrp.service packaging/keeplb.service /etc/systemd/system/
	python3 -m pip install --break-system-packages .
	systemctl daemon-reload

clean:
	-$(PY) tools/build_native.py --clean
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
