"""`python -m bench.calls`: see bench/calls/run.py."""

from bench.calls.run import main

main()
