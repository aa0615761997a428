"""A ``BROWSER`` command for tests: ``python fake_browser.py URL`` signs in like a user.

It follows the authorization URL with :func:`tests.support.fake_cloud.follow_authorization`;
with ``FAKE_BROWSER=absent`` it does nothing (nobody signs in).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.fake_cloud import follow_authorization

if __name__ == "__main__":
    if os.environ.get("FAKE_BROWSER") != "absent":
        follow_authorization(sys.argv[1])
