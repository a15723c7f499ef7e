"""Course kit for the vanishing-gradient problem in recurrent networks: release, reference and grading."""

from pathlib import Path

__version__ = "0.1.0"

# The kit is used from a checkout (pip install -e .): solutions/, assignments/ and course.yml sit beside the package.
REPO_ROOT = Path(__file__).resolve().parent.parent
