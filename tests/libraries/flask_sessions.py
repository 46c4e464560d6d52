"""Flask-Session's SQLAlchemy store, driven for tests/tests/libraries.rs.

Usage: flask_sessions.py SOCKET_DIR PORT DATABASE create|clear|load [KEY ...]
  create: lets Flask-Session create its table, then saves sessions through its session
          interface with PERMANENT_SESSION_LIFETIME at each offset; prints the store ids
  clear:  Flask-Session's own purge (what `flask session_cleanup` runs)
  load:   reads each store id through Flask-Session; prints those it still returns
"""
import json
import sys
from datetime import timedelta

from flask import Flask, Response, request
from flask_session import Session
from flask_sqlalchemy import SQLAlchemy

OFFSETS = [-3 * 86400, -3600, -120, 120, 3600, 14 * 86400]

socket_dir, port, database, action, *keys = sys.argv[1:]
app = Flask(__name__)
app.config.update(
    SECRET_KEY="session_gc tests",
    SESSION_TYPE="sqlalchemy",
    SESSION_PERMANENT=True,
    SQLALCHEMY_DATABASE_URI=f"postgresql+psycopg://postgres@/{database}?host={socket_dir}&port={port}",
)
app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
Session(app)
interface = app.session_interface

with app.app_context():
    if action == "create":
        created = []
        for n in range(60):
            app.permanent_session_lifetime = timedelta(seconds=OFFSETS[n % len(OFFSETS)])
            with app.test_request_context("/"):
                session = interface.open_session(app, request)
                session["n"] = n
                interface.save_session(app, session, Response())
                created.append(interface._get_store_id(session.sid))
        print(json.dumps(created))
    elif action == "clear":
        interface._delete_expired_sessions()
        print("[]")
    elif action == "load":
        print(json.dumps([key for key in keys if interface._retrieve_session_data(key)]))
    else:
        sys.exit(f"unknown action {action}")
