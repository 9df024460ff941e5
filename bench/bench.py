"""Runs the fastrnn speed benchmarks (see fastrnn/bench.py): python bench/bench.py --help"""
import sys

from fastrnn.bench import main

if __name__ == "__main__":
    sys.exit(main())
