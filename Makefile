# The two commands of the README: `make demo` (the main job) and `make test` (the kit's tests).
# Both set up what they need first (scripts/setup.sh), and both are safe to run again.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast release release-check

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

# Main job: check that the committed student release matches solutions/ (grading of the example class
# is added with the grading engine).
demo: setup
	$(PY) -m autograder release --check

# The whole test suite, slow notebook executions included, on two workers.
test: setup
	$(PY) -m pytest -n 2 -q

# Everything but the slow notebook executions.
test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow"

release: setup
	$(PY) -m autograder release

release-check: setup
	$(PY) -m autograder release --check
