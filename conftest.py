"""Root pytest set-up: every run (unit tests and nbval notebooks) is in smoke mode by default."""

import os

os.environ.setdefault("LESIONLIB_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
