"""Django's own session store, driven for tests/tests/libraries.rs.

Usage: django_sessions.py SOCKET_DIR PORT DATABASE create|clear|load [KEY ...]
  create: migrates django.contrib.sessions and saves sessions expiring at each offset; prints keys
  clear:  Django's own purge (SessionStore.clear_expired(), what `clearsessions` runs)
  load:   loads each KEY through Django; prints the keys Django still holds valid
"""
import json
import sys

import django
from django.conf import settings

OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400]

socket_dir, port, database, action, *keys = sys.argv[1:]
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": database,
                           "HOST": socket_dir, "PORT": port, "USER": "postgres"}},
    INSTALLED_APPS=["django.contrib.sessions"],
    SESSION_ENGINE="django.contrib.sessions.backends.db",
    USE_TZ=True,
    SECRET_KEY="session_gc tests",
)
django.setup()
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402

if action == "create":
    call_command("migrate", "sessions", verbosity=0)
    created = []
    for n in range(60):
        store = SessionStore()
        store["n"] = n
        store.set_expiry(OFFSETS[n % len(OFFSETS)])
        store.create()
        created.append(store.session_key)
    print(json.dumps(created))
elif action == "clear":
    SessionStore.clear_expired()
    print("[]")
elif action == "load":
    print(json.dumps([key for key in keys if SessionStore(session_key=key).load()]))
else:
    sys.exit(f"unknown action {action}")
