"""lesionlib: the plumbing of the skin-lesion classification course.

Readers, synthetic sample, transforms, models, training loop, metrics, plots and a small CLI.
See docs/architecture.md for the map.
"""

from lesionlib.settings import real_data_dir, smoke_mode

__version__ = "0.1.0"
__all__ = ["__version__", "real_data_dir", "smoke_mode"]
