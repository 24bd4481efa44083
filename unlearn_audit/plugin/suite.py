"""Where the conformance suite is: `conformance/` of the repository, shipped as `unlearn_audit.conformance`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CONFORMANCE_DIR = Path(str(resources.files("unlearn_audit.conformance")))
"""A real folder in every install (editable, wheel, sdist): pytest collects it like any test path."""
