"""API tokens as events: issue (the token shown once, its sha256 stored), revoke, list. The one implementation
behind `POST /tokens`, `mlhub tokens ... --direct` and the API's token table. Imports events and eventlog."""

from mlhub.tokens.service import (
    TOKEN_PREFIX,
    IssuedToken,
    RevokeResult,
    TokenNameTaken,
    TokenNotFound,
    issue_token,
    list_tokens,
    new_token,
    revoke_token,
    token_json,
    token_sha256,
)

__all__ = [
    "TOKEN_PREFIX",
    "IssuedToken",
    "RevokeResult",
    "TokenNameTaken",
    "TokenNotFound",
    "issue_token",
    "list_tokens",
    "new_token",
    "revoke_token",
    "token_json",
    "token_sha256",
]
