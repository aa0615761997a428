"""``protocol.reference``'s public API: what it exports, and the client's errors
(defined in ``protocol.errors``'s tree) are the same classes from either place."""

from __future__ import annotations

import protocol.errors
import protocol.reference
from protocol.errors import ClientError, ConnectionLost, HandshakeRefused, RequestFailed


def test_every_name_in_all_is_exported() -> None:
    for name in protocol.reference.__all__:
        assert getattr(protocol.reference, name) is not None, name


def test_client_errors_are_the_errors_module_classes() -> None:
    for name in ("ClientError", "ConnectionLost", "HandshakeRefused", "RequestFailed"):
        assert name in protocol.reference.__all__
        assert getattr(protocol.reference, name) is getattr(protocol.errors, name)


def test_client_errors_form_their_own_tree() -> None:
    for cls in (RequestFailed, ConnectionLost, HandshakeRefused):
        assert issubclass(cls, ClientError)
        assert not issubclass(cls, protocol.errors.ProtocolError)


def test_client_errors_carry_what_the_daemon_said() -> None:
    failed = RequestFailed("unknown_agent", "no agent 'x'")
    assert (failed.code, failed.message, str(failed)) == (
        "unknown_agent",
        "no agent 'x'",
        "unknown_agent: no agent 'x'",
    )
    refused = HandshakeRefused("daemon closed the connection (4401)", code=4401)
    assert (refused.status, refused.code, str(refused)) == (
        None,
        4401,
        "daemon closed the connection (4401)",
    )
