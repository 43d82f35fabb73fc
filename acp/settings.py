"""ACP settings, read from the environment (see README, "Configuration")."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-for-debug"  # noqa: S105 - DEBUG only

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "acp.admin_site.AcpAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "acp",
    "bindings",
    "sessions.apps.AcpSessionsConfig",
    "commands",
]

# How requests are served (acp/serving/): "optimised" (pooled request threads, middleware hooks in the event loop,
# fixed SQL on the hottest paths, a tuned garbage collector) or "stock" (Django's own handler, middleware and ORM).
ACP_SERVING = os.environ.get("ACP_SERVING", "optimised").strip().lower()
if ACP_SERVING not in ("optimised", "stock"):
    raise ImproperlyConfigured(f'ACP_SERVING must be "optimised" or "stock", not "{ACP_SERVING}".')

# Django's stock classes, listed by their own paths so `check --deploy` sees them; with ACP_SERVING=optimised the
# ASGI handler loads their inline subclasses instead (acp/serving/middleware.py).
MIDDLEWARE = [
    "acp.api.middleware.RequestGuardMiddleware",
    "acp.api.https.ApiHttpsOnlyMiddleware",
    "acp.api.middleware.RateLimitHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "acp.api.middleware.ApiNotFoundMiddleware",
    # Turns a locked-out admin sign-in into the lockout page (django-axes; async-capable, so no thread hop).
    "axes.middleware.AxesMiddleware",
]

# Failed sign-ins to the support console are counted per username and per client address by django-axes
# (in the database, so every server process agrees); its backend refuses a locked-out login before Django's own
# checks the password. API tokens never go through authenticate(), so they are not counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ACP_ADMIN_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("ACP_ADMIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"
AXES_RESET_ON_SUCCESS = True
# Tries during a lockout do not extend it: it ends ACP_ADMIN_LOCKOUT_MINUTES after the failure that caused it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "acp.admin_site.client_ip"
AXES_VERBOSE = False  # its start-up banner would precede the one line `create_token` and `demo_setup` print
# Proxies in front of the server that append to X-Forwarded-For (0: use the connection's address; the header is
# ignored, since a client can write anything in it).
ACP_PROXY_COUNT = env_int("ACP_PROXY_COUNT", 0)

ROOT_URLCONF = "acp.urls"
WSGI_APPLICATION = "acp.wsgi.application"
ASGI_APPLICATION = "acp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        # With the pool, Django makes this the pool's check on lending a connection, which acp/dbpool.py widens to
        # the whole pool on the first failure: connections killed while idle (a restart) are replaced, not lent.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # With the database unreachable a request fails (503) within this, not after the kernel's TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5))
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DATABASE_POOL", False):
    # Django's connections are per thread; under ASGI a request's thread is one of a few pooled ones
    # (acp/serving/request_threads.py), or a fresh one per request with ACP_SERVING=stock. psycopg's pool
    # shares a few connections among all of them, and keeps none open per idle thread.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DATABASE_POOL_MIN", 2),
        "max_size": env_int("DATABASE_POOL_MAX", 20),
        # Seconds a request waits for a connection: with the database down, it answers 503 after this.
        "timeout": env_float("DATABASE_POOL_TIMEOUT", 4.0),
        # A failed attempt to open a connection is retried with a growing delay; giving up once no request can
        # still be waiting for it lets the next request try again at once, so a restarted database is used at once.
        "reconnect_timeout": env_float("DATABASE_POOL_TIMEOUT", 4.0),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "acp.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the apps' static folders when collectstatic has not been run (tests, `bin/serve`).
WHITENOISE_USE_FINDERS = True

APPEND_SLASH = False

# Security settings that `manage.py check --deploy` asks for; TLS is terminated by the proxy in front.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# API clients (the SDK's ApiClient, daemons) do not follow redirects: an API path is never redirected; over plain
# HTTP it is refused with the JSON error shape instead (acp.api.https.ApiHttpsOnlyMiddleware).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^v1/", r"^api/v1/"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- ACP knobs -------------------------------------------------------------------------------
ACP_DEVICE_OFFLINE_AFTER = env_int("ACP_DEVICE_OFFLINE_AFTER", 90)  # seconds without a heartbeat
ACP_MAX_PLAN_BYTES = env_int("ACP_MAX_PLAN_BYTES", 1024 * 1024)
ACP_MAX_BODY_BYTES = env_int("ACP_MAX_BODY_BYTES", 2 * 1024 * 1024)
ACP_MAX_JSON_DEPTH = env_int("ACP_MAX_JSON_DEPTH", 100)  # levels of nesting of a JSON request body
ACP_BODY_READ_TIMEOUT = env_float("ACP_BODY_READ_TIMEOUT", 30.0)  # seconds for a whole request body to arrive
ACP_MAX_HEADER_BYTES = env_int("ACP_MAX_HEADER_BYTES", 16 * 1024)  # whole or still arriving (acp/serving/http.py)
ACP_LAUNCH_ACK_TIMEOUT = env_float("ACP_LAUNCH_ACK_TIMEOUT", 10.0)  # seconds
ACP_COMMAND_TTL = os.environ.get("ACP_COMMAND_TTL", "1h")  # a duration: 30s, 15m, 2h, 30d
ACP_RETENTION_DAYS = env_int("ACP_RETENTION_DAYS", 30)
# A duration: how long an Idempotency-Key replays its answer; retention deletes older records.
ACP_IDEMPOTENCY_TTL = os.environ.get("ACP_IDEMPOTENCY_TTL", "24h")
ACP_SESSION_LOST_AFTER = os.environ.get("ACP_SESSION_LOST_AFTER", "10m")  # live session with no heartbeat: failed
ACP_LONG_POLL_MAX_WAIT = env_float("ACP_LONG_POLL_MAX_WAIT", 30.0)
ACP_STREAM_HEARTBEAT = env_float("ACP_STREAM_HEARTBEAT", 15.0)  # seconds between an event stream's keepalives
ACP_STREAM_MAX_SECONDS = env_float("ACP_STREAM_MAX_SECONDS", 300.0)  # then the client reconnects (Last-Event-ID)
# A machine's channel (GET /api/v1/machines/{id}/stream) ends after this many seconds (its daemon reconnects), and
# each process marks the machines of its open channels seen every PRESENCE_INTERVAL seconds (in one statement).
ACP_CHANNEL_MAX_SECONDS = env_float("ACP_CHANNEL_MAX_SECONDS", 1800.0)
ACP_CHANNEL_PRESENCE_INTERVAL = env_float("ACP_CHANNEL_PRESENCE_INTERVAL", 30.0)
# How a process takes channel connects in (acp/serving/fast_streams.py ConnectAdmission): at most PER_SECOND (0: no
# pace), in batches of BATCH opened together (one thread hop and one token lookup a batch), AT_ONCE batches at the
# same time, in arrival order; one that would wait more than QUEUE_WAIT seconds is answered 503 with a Retry-After.
# At 125 a second a 60 s storm of 10,000 fits the queue (no 503; back after ~80 s) and takes a bounded share of the
# worker (README, "What the storm costs"); a slower pace overflows the queue and the refused pay their take-in again.
# The wait stays below the daemons' 30 s read timeout.
ACP_CHANNEL_CONNECTS_AT_ONCE = env_int("ACP_CHANNEL_CONNECTS_AT_ONCE", 1)
ACP_CHANNEL_CONNECTS_PER_SECOND = env_float("ACP_CHANNEL_CONNECTS_PER_SECOND", 125.0)
ACP_CHANNEL_CONNECT_QUEUE_WAIT = env_float("ACP_CHANNEL_CONNECT_QUEUE_WAIT", 25.0)
ACP_CHANNEL_CONNECT_BATCH = env_int("ACP_CHANNEL_CONNECT_BATCH", 8)  # connects opened together, in one thread hop
if (
    ACP_CHANNEL_CONNECTS_AT_ONCE < 1
    or ACP_CHANNEL_CONNECT_BATCH < 1
    or ACP_CHANNEL_CONNECTS_PER_SECOND < 0
    or ACP_CHANNEL_CONNECT_QUEUE_WAIT < 0
):
    raise ImproperlyConfigured(
        "ACP_CHANNEL_CONNECTS_AT_ONCE and ACP_CHANNEL_CONNECT_BATCH must be at least 1, "
        "ACP_CHANNEL_CONNECTS_PER_SECOND and ACP_CHANNEL_CONNECT_QUEUE_WAIT at least 0."
    )
if not 0 < ACP_CHANNEL_PRESENCE_INTERVAL < ACP_DEVICE_OFFLINE_AFTER:
    raise ImproperlyConfigured(
        f"ACP_CHANNEL_PRESENCE_INTERVAL ({ACP_CHANNEL_PRESENCE_INTERVAL:g}) must be above 0 and below "
        f"ACP_DEVICE_OFFLINE_AFTER ({ACP_DEVICE_OFFLINE_AFTER}): a machine with an open channel would read offline."
    )
ACP_EVENTS_PER_BATCH = env_int("ACP_EVENTS_PER_BATCH", 500)  # events in one ingest request
ACP_EVENT_MAX_BYTES = env_int("ACP_EVENT_MAX_BYTES", 64 * 1024)  # an event's data, as JSON
# Seconds between a waiter's re-checks of the database when no notification came (a last resort; acp/realtime.py).
ACP_LONG_POLL_RECHECK = env_float("ACP_LONG_POLL_RECHECK", 60.0)
# Threads per server process for requests' synchronous code under ASGI (acp/serving/request_threads.py; optimised only).
ACP_REQUEST_THREADS = env_int("ACP_REQUEST_THREADS", 4)
# Seconds between the collector's rounds in a server process: collect the young, freeze the survivors
# (acp/serving/collector.py; optimised only). 0: CPython's own passes alone.
ACP_GC_FREEZE_INTERVAL = env_float("ACP_GC_FREEZE_INTERVAL", 1.0)
# The LISTEN connection's round trip: every INTERVAL seconds, failing after TIMEOUT (a frozen backend, a dead route).
ACP_LISTENER_CHECK_INTERVAL = env_float("ACP_LISTENER_CHECK_INTERVAL", 10.0)
ACP_LISTENER_CHECK_TIMEOUT = env_float("ACP_LISTENER_CHECK_TIMEOUT", 5.0)
# On SIGTERM: waiters are answered at once; requests still running after this many seconds are cut (acp/shutdown.py).
ACP_SHUTDOWN_GRACE = env_float("ACP_SHUTDOWN_GRACE", 10.0)
ACP_TOKEN_TOUCH_INTERVAL = env_int("ACP_TOKEN_TOUCH_INTERVAL", 60)  # seconds between lastUsedAt writes
# Seconds after which an unanswered Idempotency-Key claim (its request died) may be taken over.
ACP_IDEMPOTENCY_IN_FLIGHT_TIMEOUT = env_float("ACP_IDEMPOTENCY_IN_FLIGHT_TIMEOUT", 120.0)

# Rate limits per token (acp/api/throttling.py; README, "Rate limits"): "N/second|minute|hour", each token's
# "api" and "daemon" buckets alike. The storage is per process (memory://) unless a shared one is given (redis://…).
ACP_RATELIMIT_ENABLED = env_bool("ACP_RATELIMIT_ENABLED", True)
ACP_RATELIMIT_USER = os.environ.get("ACP_RATELIMIT_USER", "600/minute")
ACP_RATELIMIT_DEVICE = os.environ.get("ACP_RATELIMIT_DEVICE", "1200/minute")
ACP_RATELIMIT_STORAGE_URL = os.environ.get("ACP_RATELIMIT_STORAGE_URL", "memory://")
ACP_RATELIMIT_STORAGE_TIMEOUT = env_float("ACP_RATELIMIT_STORAGE_TIMEOUT", 0.5)  # seconds; then the request is let in
ACP_PAIRING_TOKEN_TTL = env_int("ACP_PAIRING_TOKEN_TTL", 600)  # default life of a pairing token, seconds
ACP_PAIRING_TOKEN_MAX_TTL = env_int("ACP_PAIRING_TOKEN_MAX_TTL", 3600)  # the longest `ttlSeconds` accepted
# Exchanges with an unknown pairing token allowed per client address within the window; then 429.
ACP_PAIRING_FAILURE_LIMIT = env_int("ACP_PAIRING_FAILURE_LIMIT", 10)
ACP_PAIRING_FAILURE_WINDOW = env_int("ACP_PAIRING_FAILURE_WINDOW", 300)  # seconds

# The body limit is enforced by RequestGuardMiddleware with a JSON 413; Django's own check agrees.
DATA_UPLOAD_MAX_MEMORY_SIZE = ACP_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["acp.api.authentication.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "acp.api.permissions.DeviceTokenScope",
        "acp.api.permissions.KeyScopes",
    ],
    "DEFAULT_PARSER_CLASSES": ["acp.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": [
        "acp.api.query_params.KnownQueryParamsFilterBackend",
        "django_filters.rest_framework.DjangoFilterBackend",
    ],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "acp.api.negotiation.JsonContentNegotiation",
    "DEFAULT_PAGINATION_CLASS": "acp.api.pagination.ListEnvelopePagination",
    "DEFAULT_SCHEMA_CLASS": "acp.api.schema.AcpAutoSchema",
    "EXCEPTION_HANDLER": "acp.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["acp.api.throttling.TokenRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "PAGE_SIZE": 50,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ACP — the agent control plane",
    "DESCRIPTION": (
        "Sync plans for workspace bindings, coding-agent launches on users' machines, and control "
        "commands to running local sessions. `/v1` speaks camelCase, `/api/v1` snake_case."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "SyncSessionStatusEnum": "bindings.choices.SyncSessionStatus",
        "LaunchStatusEnum": "sessions.choices.LaunchStatus",
        "LaunchAckStatusEnum": "sessions.choices.AckStatus",
        "ThreadStatusEnum": "commands.choices.ThreadStatus",
        "MachineChannelEventEnum": "sessions.choices.ChannelEvent",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer"},
            "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
    },
    # Alternatives: the key in `Authorization: Bearer` or in `X-API-Key`.
    "SECURITY": [{"bearerAuth": []}, {"apiKeyAuth": []}],
}

# HSTS preload is a decision for the domain's owner (SECURE_HSTS_PRELOAD=1), not a default.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
