"""What the plugin keeps in the pytest config's stash: the run (torch-free).

Its own module so that the hooks (`unlearn_audit.plugin`) and the cases (`plugin.case`) share the key
without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from unlearn_audit.plugin.run import AuditRun  # noqa: F401 - named in the key's type below

run_key = pytest.StashKey["AuditRun"]()
