import sys

from trlx.cli import main

sys.exit(main())
