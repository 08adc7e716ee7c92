"""``python -m attnexplain.cli``: the same as the ``attnexplain`` console script."""

import sys

from attnexplain.cli import main

sys.exit(main())
