"""`python -m jigcnn.train --help`."""

import sys

from jigcnn import allocator
from jigcnn.train.cli import main

allocator.retain_freed_memory()  # a training process: keep freed memory (jigcnn.allocator)
sys.exit(main())
