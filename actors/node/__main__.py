"""`python -m actors.node`: the same as the `farm-node` command."""
import sys

from actors.node.node import main

sys.exit(main())
