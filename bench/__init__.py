"""The benchmark suite: ``.venv/bin/python bench/run.py [--quick]`` (see docs/performance.md).

Every scenario is measured against a baseline in the same run and reported as a
ratio, because absolute numbers drift between machines and with the machine's load.
Nothing here is imported by the daemon or the test suite (except the smoke test,
which runs ``bench/run.py --smoke`` as a subprocess).
"""
