"""`python -m actors.coordinator`: the same as the `farm-coordinator` command."""
import sys

from actors.coordinator.main import main

sys.exit(main())
