# The one task runner: CI (.ci/run), the README and developers all call these targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint bench demo demo-backtest stack-up stack-down stack-status clean browser screenshots \
	lock deploy-tools deploy-check deploy-evaluated

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# constraints.txt is the lock (`make lock` writes it): every install, the image's included, takes
# its pins, so CI, a developer's venv and deploy/Dockerfile run the same versions.
$(BIN)/orderwatch: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(BIN)/orderwatch ## create .venv with orderwatch installed editable (.venv/bin/orderwatch)

test: install ## run the whole test suite (what CI runs); starts the local stack when it is not up
	bash deploy/local/stack.sh ensure
	$(BIN)/pytest

test-fast: install ## run the suite without the slow and integration tests
	$(BIN)/pytest -m "not slow and not integration"

stack-up: ## start the local Kafka (KRaft) and Redis, create the topics (idempotent)
	bash deploy/local/stack.sh up

stack-down: ## stop the local stack (data stays under .local/)
	bash deploy/local/stack.sh down

stack-status: ## what of the local stack runs
	bash deploy/local/stack.sh status

lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install ## backtest throughput and state-size benchmarks, results in bench/results/
	$(BIN)/python bench/bench_backtest.py

demo: install ## the whole pipeline: local stack, simulated stream, live worker, scorecard
	$(BIN)/orderwatch demo

demo-backtest: install ## simulate 40,000 orders and backtest them with labels
	mkdir -p out
	$(BIN)/orderwatch simulate --orders 40000 --seed 7 --output out/sim.jsonl.gz
	$(BIN)/orderwatch backtest out/sim.jsonl.gz --blocklist out/sim.blocklist.jsonl \
		--labels out/sim.labels.jsonl --output out/exceptions.jsonl --dead-letter out/dead-letters.jsonl

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out

browser: ## install Debian's chromium for the console's browser tests (idempotent)
	bash deploy/local/browser.sh

screenshots: install browser ## retake the console screenshots in docs/images/ (needs the local stack)
	ORDERWATCH_SCREENSHOTS=docs/images $(BIN)/pytest tests/console/test_browser.py tests/console/test_analytics.py -p no:cacheprovider

LOCK_VENV := .local/lock-venv

lock: ## re-pin constraints.txt from pyproject.toml (after adding a dependency)
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2; }
	$(LOCK_VENV)/bin/pip-compile --quiet --allow-unsafe --strip-extras --extra dev --extra rocksdb \
		--no-emit-index-url --no-emit-find-links -o constraints.txt pyproject.toml

deploy-tools: ## install helm (go install, cached), promtool and prometheus (apt) when missing
	bash deploy/tools.sh all

deploy-check: install deploy-tools ## lint the Dockerfile, the chart and the rules; unit-test the rules
	bash deploy/tools.sh check

deploy-evaluated: install deploy-tools ## run the real-Prometheus test, write deploy/prometheus/evaluated.md
	ORDERWATCH_EVALUATED_OUT=deploy/prometheus/evaluated.md $(BIN)/pytest tests/deploy/test_prometheus_live.py


REVIEW_SIM = out/review/sim.jsonl.gz
example-report: install ## regenerate docs/examples/report.{html,md}: a simulated run (bank transfers clear in days), backtest, calibrate, report
	mkdir -p out/review docs/examples
	$(BIN)/orderwatch simulate --orders 40000 --seed 7 --slow-method bank_transfer --output $(REVIEW_SIM)
	$(BIN)/orderwatch backtest $(REVIEW_SIM) --blocklist out/review/sim.blocklist.jsonl --output out/review/exceptions.jsonl -q
	$(BIN)/orderwatch calibrate $(REVIEW_SIM) --blocklist out/review/sim.blocklist.jsonl --labels out/review/sim.labels.jsonl \
		--budget 1% --output docs/examples/calibrated-rules.toml --json out/review/calibration.json > docs/examples/calibrate.txt
	$(BIN)/orderwatch report --cases out/review/exceptions.jsonl --history $(REVIEW_SIM) \
		--calibration out/review/calibration.json --period 1d --end 2026-03-05T00:00:00Z \
		--title "Order exceptions review (simulated shop, seed 7)" \
		--html docs/examples/report.html --markdown docs/examples/report.md

example-report-screenshot: install browser ## docs/examples/report.png: the example report in Debian's chromium (Playwright)
	ORDERWATCH_SCREENSHOTS=docs/examples $(BIN)/pytest tests/review/test_report_browser.py -p no:cacheprovider
