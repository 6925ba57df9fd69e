"""`python -m jigcnn.train --help`."""

import sys

from jigcnn.train.cli import main

sys.exit(main())
