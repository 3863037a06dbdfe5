"""`python -m trlx.demos.sentiment configs/sentiment.yml [section.field=value ...]` (what `make demo` runs)."""

import sys

from trlx.demos.sentiment.run import main

if __name__ == "__main__":
    sys.exit(main())
