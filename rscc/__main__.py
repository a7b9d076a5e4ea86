import sys

from rscc.cli import main

sys.exit(main())
