import sys

from tsf.cli import main

sys.exit(main())
