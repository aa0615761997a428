"""What the benchmarks share: a peer (reference client, echo server, model server)
run as a subprocess of the benchmark script itself, as in real use."""

from __future__ import annotations

import asyncio
import sys

__all__ = ["spawn_peer", "stop_peer"]


async def spawn_peer(script: str, *args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Run ``script`` with ``args``; returns the process and the first line it prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
    return proc, line


async def stop_peer(proc: asyncio.subprocess.Process) -> None:
    """Close the peer's stdin (its signal to stop) and wait for it."""
    assert proc.stdin is not None
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 10)
