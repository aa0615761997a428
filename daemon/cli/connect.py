"""``daemon connect google|microsoft [--account A]``: sign in and store the tokens.

Opens the provider's sign-in page in the browser (``BROWSER`` decides which) and
prints its address, waits for the reply on a loopback port, stores the refresh
token in the keyring and marks the account connected. ``gmail``, ``outlook`` and
``teams`` are accepted for the provider; one Microsoft sign-in serves Outlook and
Teams.
"""

from __future__ import annotations

import argparse
import asyncio

from .common import load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("provider", help="google (gmail) or microsoft (outlook, teams)")
    p.add_argument("--account", help="the account's address (default: the one that signs in)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the sign-in (300)"
    )
    p.add_argument(
        "--form-post", action="store_true", help="Microsoft: ask for the reply by form_post"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: httpx and the OAuth code are not what every other verb should pay
    # for at start-up (`daemon status` is meant to answer in well under a second).
    from agents.cloud.oauth import account_name, sign_in
    from agents.cloud.settings import provider_of
    from daemon.accounts import Accounts, cloud_settings

    try:
        provider = provider_of(args.provider)
    except ValueError as exc:
        print(f"daemon: {exc}")
        return 2
    if args.timeout <= 0:
        print("daemon: --timeout must be positive")
        return 2
    paths, config = load()
    paths.ensure()
    settings = cloud_settings(config.cloud)

    async def flow() -> str:
        bundle = await sign_in(
            provider,
            settings,
            timeout_s=args.timeout,
            login_hint=args.account,
            response_mode="form_post" if args.form_post else None,
        )
        name = args.account or await account_name(provider, settings, bundle.access_token)
        await asyncio.to_thread(Accounts(paths).store_tokens, provider, name, bundle)
        return str(name)

    name = asyncio.run(flow())
    print(f"connected {provider} account {name}")
    return 0
