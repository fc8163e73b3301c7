"""Dataflow Flex Template launcher script (FLEX_TEMPLATE_PYTHON_PY_FILE in the image's template stage): runs
``distilbeam run`` with the template's parameters. See pipeline/flex_template.py."""

import sys

from distilbeam.pipeline.flex_template import main

if __name__ == "__main__":
    sys.exit(main())
