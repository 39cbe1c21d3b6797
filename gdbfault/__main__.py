"""`python -m gdbfault` is the `gdbfault` command."""
import sys

from gdbfault.cli import main

sys.exit(main())
