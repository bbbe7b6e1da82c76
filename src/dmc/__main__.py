import sys

from dmc.cli import main

sys.exit(main())
