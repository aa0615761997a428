"""``protocol`` is pure: its modules import no event loop, no websockets, no SQLite.

The reference client, its store and the batched connection (which do I/O) live in
``protocol.reference``, which importing ``protocol`` must not pull in. Checked in a
fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

PURE_MODULES = (
    "protocol",
    "protocol.agent_config",
    "protocol.codec",
    "protocol.errors",
    "protocol.frames",
    "protocol.lazy",
    "protocol.schema",
    "protocol.storage",
)
IMPURE = ("asyncio", "sqlite3", "websockets", "protocol.reference")


def _loaded_after_importing(modules: tuple[str, ...]) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        # what the interpreter (or a coverage hook, which uses sqlite3) loaded first
        "before = set(sys.modules)\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps([[m for m in {list(IMPURE)!r} if m in sys.modules and m not in before],"
        f" [m for m in {list(IMPURE)!r} if m in before]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded, preloaded = json.loads(out.stdout)
    return [*loaded, *(f"{m} (already loaded)" for m in preloaded)]


def test_pure_modules_import_no_io() -> None:
    loaded = _loaded_after_importing(PURE_MODULES)
    assert [m for m in loaded if not m.endswith("(already loaded)")] == []


def test_the_check_sees_an_impure_import() -> None:
    # The same check on the reference client and its store finds what they import.
    loaded = _loaded_after_importing(
        ("protocol.reference.client", "protocol.reference.sqlite_store")
    )
    assert {m.removesuffix(" (already loaded)") for m in loaded} == set(IMPURE)
    # The package itself loads its names on first use (a CLI verb needs only the client).
    loaded = _loaded_after_importing(("protocol.reference",))
    assert [m for m in loaded if not m.endswith("(already loaded)")] == ["protocol.reference"]
