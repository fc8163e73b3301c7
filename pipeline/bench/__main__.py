"""``python -m distilbeam.pipeline.bench [flags]``: the same as ``distilbeam bench``. ``_child SPEC`` runs
one measured child process of a benchmark (``children.run_measure``)."""

import argparse
import sys

from distilbeam.pipeline import bench
from distilbeam.pipeline.bench.children import child_main

if len(sys.argv) == 3 and sys.argv[1] == "_child":
    sys.exit(child_main(sys.argv[2]))
parser = argparse.ArgumentParser(prog="distilbeam bench", description=bench.__doc__.split("\n\n")[0])
bench.add_arguments(parser)
sys.exit(bench.main(parser.parse_args()))
