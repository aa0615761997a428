"""``daemon schema``: print the protocol's JSON Schema."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("schema", help="print the protocol's JSON Schema")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from protocol.schema import protocol_schema

    print(json.dumps(protocol_schema(), indent=2, sort_keys=True))
    return 0
