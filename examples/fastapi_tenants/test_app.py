"""Runs the example app against a running pgtenant (`pgtenant dev`): two
organisations' users call the API concurrently through one pooled engine,
and each sees only its organisation's accounts (and its sub-organisations').

Environment (tests/integration/examples.rs sets it from `pgtenant dev`'s banner):
PGTENANT_PROXY (host:port/database), PGTENANT_ADMIN (http://host:port),
PGTENANT_ADMIN_TOKEN, JWT_SECRET, JWT_ISSUER, JWT_AUDIENCE.
"""

import json
import os
import secrets
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import jwt

env = os.environ


def admin(method: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        env["PGTENANT_ADMIN"] + path,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": "Bearer " + env["PGTENANT_ADMIN_TOKEN"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as reply:
        return json.load(reply)


def token(tenant: str, subject: str, lifetime: int = 300, secret: str | None = None) -> str:
    claims = {
        "iss": env["JWT_ISSUER"],
        "aud": env["JWT_AUDIENCE"],
        "sub": subject,
        "tenant_id": tenant,
        "exp": int(time.time()) + lifetime,
    }
    return jwt.encode(claims, secret or env["JWT_SECRET"], algorithm="HS256")


# The app's own login: a service login, which belongs to no tenant.
password = secrets.token_urlsafe(24)
admin("POST", "/v1/logins", {"username": "orders_api", "password": password, "service": True})
env["PGTENANT_SERVICE_URL"] = f"postgresql+psycopg://orders_api:{password}@{env['PGTENANT_PROXY']}"

sys.path.insert(0, os.path.dirname(__file__))
from fastapi.testclient import TestClient  # noqa: E402

from app import app, engine  # noqa: E402

client = TestClient(app)

USERS = {
    # The parent organisation sees its branches' accounts too.
    "ceo@hsbc": (token("hsbc", "ceo@hsbc"), [1, 2, 3, 4, 5, 6]),
    "teller@hsbc-hk": (token("hsbc-hk", "teller@hsbc-hk"), [3, 4]),
    "ops@barclays": (token("barclays", "ops@barclays"), [7, 8, 9]),
}


def call(user: str) -> tuple[str, list[int]]:
    bearer, _ = USERS[user]
    reply = client.get("/accounts", headers={"Authorization": f"Bearer {bearer}"})
    assert reply.status_code == 200, reply.text
    return user, [account["id"] for account in reply.json()]


requests = [user for _ in range(40) for user in USERS]
with ThreadPoolExecutor(max_workers=8) as workers:
    results = list(workers.map(call, requests))
for user, ids in results:
    assert ids == USERS[user][1], f"{user} saw {ids}"
print(f"{len(results)} concurrent requests of {len(USERS)} organisations' users, each saw only its rows")
assert engine.pool.checkedout() == 0
assert engine.pool.size() == 4, "one pool of four connections served every organisation"

me = client.get("/me", headers={"Authorization": f"Bearer {USERS['teller@hsbc-hk'][0]}"}).json()
assert me["subject"] == "teller@hsbc-hk", me

for bad, words in [
    (None, "bearer token is required"),
    (token("hsbc", "x", secret="not-the-key-but-long-enough-to-sign-with"), "signature"),
    (token("hsbc", "x", lifetime=-120), "expired"),
    (token("no-such-bank", "x"), "does not exist"),
]:
    headers = {"Authorization": f"Bearer {bad}"} if bad else {}
    reply = client.get("/accounts", headers=headers)
    assert reply.status_code == 401 and words in reply.text, (words, reply.status_code, reply.text)

# Without a token the service's connections see nothing.
with engine.connect() as connection:
    from sqlalchemy import text

    assert connection.execute(text("SELECT count(*) FROM accounts")).scalar() == 0
print("refused tokens get 401 with pgtenant's reason; the service login alone sees no rows")
