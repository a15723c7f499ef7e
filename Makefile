# The two commands of the README: `make demo` (the main job) and `make test` (the kit's tests).
# Both set up what they need first (scripts/setup.sh), and both are safe to run again.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast release release-check

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

# The example class's hidden inputs come from the kit's public example secret (autograder.secret
# .PUBLIC_EXAMPLE_SECRET), so that a fresh clone runs the demo as it is; a real course makes its own secret with
# `autograder secret` (README: the course secret).
EXAMPLE_SECRET := public-example-secret-anyone-can-compute-these-inputs

# Main job: check the committed release against solutions/, build the example class (examples/class.yml) and
# grade it; the reports land in build/example_results/.
demo: setup
	$(PY) -m autograder release --check
	rm -rf build/example_class
	$(PY) -m autograder build-class examples/class.yml build/example_class
	AUTOGRADER_COURSE_SECRET=$(EXAMPLE_SECRET) $(PY) -m autograder grade build/example_class \
	  --out build/example_results --jobs 2

# The whole test suite, slow ones included, on two workers; a test file stays on one worker (its module fixtures,
# such as the corpus validation, then run once).
test: setup
	$(PY) -m pytest -n 2 --dist loadfile -q

# Everything but the slow tests (notebook executions, release builds, whole-class grading): under a minute on
# 2 cores. No module-wide fixture is expensive here, so tests are spread one by one.
test-fast: setup
	$(PY) -m pytest -n 2 --dist load -q -m "not slow"

release: setup
	$(PY) -m autograder release

release-check: setup
	$(PY) -m autograder release --check
