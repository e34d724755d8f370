"""Settings of the shop example. Environment variables let tests run it on private topics and files."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "django-insecure-example-only")
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "orders",
    "kbridge.contrib.django",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        # The worker's processes and the listener (inline route) write at the same time: wait for the lock.
        "OPTIONS": {"timeout": 30},
    }
}

# Topic names get a prefix so that each test run has its own topics on a shared broker.
SHOP_TOPIC_PREFIX = os.environ.get("SHOP_TOPIC_PREFIX", "")

KBRIDGE = {
    "client_id": os.environ.get("SHOP_KBRIDGE_CLIENT_ID", "shop"),
    "kafka": {
        "bootstrap_servers": os.environ.get("SHOP_KAFKA", "127.0.0.1:9092"),
        # Short sessions: a restarted listener gets its partitions back within seconds.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    },
    "celery": "shop.celery:app",
    "shutdown_timeout": 20,
}

CELERY_BROKER_URL = os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("SHOP_CELERY_QUEUE", "shop")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
