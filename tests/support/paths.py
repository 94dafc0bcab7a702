"""Where things are: the repository, its configs, the shared data beside it, the testbed cache."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
# The testbed pair is built once and cached; the demo and the tests share the cache.
CACHE = Path(os.environ.get("THINKSWITCH_CACHE", "~/.cache/thinkswitch")).expanduser()
