"""`python -m actors.control.cli`: the same as the `farm` command."""
import sys

from actors.control.cli import main

sys.exit(main())
