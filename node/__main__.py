"""`python -m node` is the same as the `homing` console script."""

import sys

from node.cli import main

sys.exit(main())
