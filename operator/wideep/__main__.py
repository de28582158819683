import sys

from wideep.cli import main

sys.exit(main())
