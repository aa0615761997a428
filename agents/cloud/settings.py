"""What the cloud connectors need to know about endpoints and clients: plain values.

Rules:

- The daemon fills :class:`CloudSettings` from its ``[cloud]`` config section (file
  and ``TETHER_*`` variables); this package never reads the environment.
- Base URLs carry no trailing slash (:func:`CloudSettings.__post_init__` strips it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PROVIDERS", "CloudSettings", "provider_of"]

PROVIDERS = ("google", "microsoft")
_ALIASES = {
    "google": "google",
    "gmail": "google",
    "microsoft": "microsoft",
    "outlook": "microsoft",
    "teams": "microsoft",
}


def provider_of(name: str) -> str:
    """``google`` or ``microsoft`` for a provider or agent-kind name; ValueError otherwise."""
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}: use google (gmail) or microsoft (outlook, teams)"
        ) from None


@dataclass(frozen=True)
class CloudSettings:
    """Endpoints, OAuth client ids and HTTP limits for the cloud connectors."""

    gmail_api_base: str = "https://gmail.googleapis.com/gmail/v1"
    graph_api_base: str = "https://graph.microsoft.com/v1.0"
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    microsoft_auth_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    microsoft_token_url: str = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    microsoft_client_id: str | None = None
    timeout_s: float = 30.0
    max_in_flight: int = 4
    max_attempts: int = 6
    max_wait_s: float = 60.0  # a Retry-After longer than this ends the run as throttled
    refresh_margin_s: float = 120.0  # refresh an access token this long before it expires

    def __post_init__(self) -> None:
        for name in ("gmail_api_base", "graph_api_base"):
            object.__setattr__(self, name, getattr(self, name).rstrip("/"))
        if self.max_in_flight < 1 or self.max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be at least 1")
