"""``python -m conch``: the ``conch`` command."""

import sys

from conch.cli import main

if __name__ == "__main__":
    sys.exit(main())
