"""``daemon schema``: print the protocol's JSON Schema."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from protocol.schema import protocol_schema

    print(json.dumps(protocol_schema(), indent=2, sort_keys=True))
    return 0
