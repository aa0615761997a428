"""``daemon pair [--rotate]``: where the pairing token is, or a new one."""

from __future__ import annotations

import argparse

from daemon.pairing import read_or_create_token, rotate_token, token_source
from daemon.runtime import read_runtime

from .common import load_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rotate", action="store_true", help="make a new token (old sessions end)")
    p.add_argument("--show", action="store_true", help="print the token itself")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    paths = settings.paths.ensure()
    if args.rotate:
        if settings.token:
            print("TETHER_TOKEN is set: the token comes from the environment; unset it to rotate")
            return 1
        token = rotate_token(paths)
        print(f"new pairing token written to {paths.token_file}")
        if read_runtime(paths) is not None:
            print("the running daemon picks it up within seconds and closes the old sessions")
    else:
        token = read_or_create_token(paths, settings.token)
        print(f"pairing token: {token_source(paths, settings.token)}")
    if args.show:
        print(token)
    return 0
