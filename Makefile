# skewd's two quick-start commands, and the pieces they stand on.
.PHONY: demo test bootstrap host-packages bench clean

# The main job on its embedded default: a short skew sweep over the ZeroMQ
# pipeline (local processes); the table ends with the path of its report.
demo: bootstrap
	.venv/bin/skewd experiment --duration 3s --out out/experiment

# The whole test suite, with everything it needs set up first.
test: bootstrap host-packages
	.venv/bin/python -m pytest -q tests

bootstrap:
	@scripts/bootstrap

host-packages:
	@scripts/host-packages

bench: bootstrap
	.venv/bin/python bench/clocks.py
	.venv/bin/python bench/spans.py
	.venv/bin/python bench/stage_loop.py
	.venv/bin/python bench/experiment.py

clean:
	rm -rf build src/skewd/*.so src/skewd/_*.c src/*.egg-info
