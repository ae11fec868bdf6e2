import sys

from model_export.train.cli import main

sys.exit(main())
