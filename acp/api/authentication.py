"""API key authentication: `Authorization: Bearer acp_…`, or the same key in `X-API-Key: acp_…`."""

from django.utils import timezone
from rest_framework import authentication, exceptions

from acp.selectors import token_by_hash
from acp.services import TOKEN_PREFIX, token_hash, token_touch

INVALID_TOKEN = "Invalid, expired or revoked token."


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            api_key = request.META.get("HTTP_X_API_KEY")
            return None if api_key is None else authenticate_raw_token(api_key.strip())
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed(INVALID_TOKEN) from exc
        return authenticate_raw_token(raw)

    def authenticate_header(self, request):
        return self.keyword


def authenticate_raw_token(raw: str, *, touch: bool = True):
    """Return (user, token) for a usable token, else raise AuthenticationFailed. With `touch=False` its use is not
    recorded here: the caller records it (`tokens_use_statement`)."""
    key = token_key(raw)
    return authenticate_found_token(None if key is None else token_by_hash(key), touch=touch)


def token_key(raw: str) -> str | None:
    """The hash `raw` is looked up by (`token_by_hash`, `tokens_by_hash`), or None: no token of ours."""
    return token_hash(raw) if raw.startswith(TOKEN_PREFIX) else None


def authenticate_found_token(token, *, touch: bool = True):
    """`authenticate_raw_token` once its token was looked up (None: not found)."""
    now = timezone.now()
    if token is None or not token.is_usable(now) or not token.user.is_active:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    if touch:
        token_touch(token=token, now=now)
    return token.user, token
