"""``python -m lesionlib``: the command-line interface."""

from lesionlib.cli import main

raise SystemExit(main())
