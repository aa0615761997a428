"""Cloud connectors: OAuth, a polite HTTP client per account, Gmail, Outlook and Teams.

Rules:

- Plain httpx against base URLs from :class:`~agents.cloud.settings.CloudSettings`
  (tests point them at local fakes). No provider SDK.
- Tokens come from an injected :class:`~agents.cloud.oauth.TokenVault`; this package
  never imports ``daemon`` and never logs, raises or returns a token in a message.
- Clients list new message refs since a cursor and fetch bodies separately; they
  return the new cursor and never persist it (the pipeline advances cursors only
  after the items are confirmed).
- Errors leave this package as :class:`~agents.errors.CloudError` subclasses.
"""
