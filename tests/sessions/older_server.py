"""Settings of an ACP server from before the machine channel (for the daemon's fallback test): as acp.settings, but
`GET /api/v1/machines/{id}/stream` answers the API's 404, as a server without the route does."""

from acp.settings import *  # noqa: F403

ROOT_URLCONF = "tests.sessions.older_server_urls"
