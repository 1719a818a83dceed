"""The host apps under ``apps/`` are top-level packages, as a site's own package is."""

from __future__ import annotations

import sys
from pathlib import Path

APPS = Path(__file__).resolve().parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))
