"""A multi-tenant API in the usual FastAPI + SQLAlchemy shape — a pooled
engine, a JWT per request — with the tenant taken from the verified token
by pgtenant instead of a `SET app.current_tenant_id` the app could get wrong.

The engine logs in as a *service login* (it belongs to no tenant and sees no
tenant rows by itself). Each request hands the caller's token to pgtenant:

    session.execute(text("SELECT pgtenant.assume(:token)"), {"token": token})

— the one line that replaces `SET app.current_tenant_id = …`. pgtenant
verifies the token (signature, expiry, issuer, audience), looks the tenant
up, and puts that tenant's signed context on the connection for the rest of
the transaction; at COMMIT or ROLLBACK the connection is back to no tenant.
Row-level security does the rest: an organisation sees its own rows and its
sub-organisations'.

Run it against `pgtenant dev` (see README.md next to this file):

    PGTENANT_SERVICE_URL=postgresql+psycopg://orders_api:…@127.0.0.1:6432/app \
        uvicorn app:app
"""

import os
from collections.abc import Iterator

from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

engine = create_engine(os.environ["PGTENANT_SERVICE_URL"], pool_size=4, max_overflow=0, pool_pre_ping=True)
app = FastAPI(title="accounts")


def bearer_token(authorization: str = Header(default="")) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(status_code=401, detail="a bearer token is required")
    return token


def tenant_session(token: str = Depends(bearer_token)) -> Iterator[Session]:
    """A session whose transaction runs as the token's tenant."""
    with Session(engine) as session, session.begin():
        try:
            session.execute(text("SELECT pgtenant.assume(:token)"), {"token": token})
        except DBAPIError as error:
            # 28000: the token was refused (pgtenant says which check failed).
            if getattr(error.orig, "sqlstate", None) != "28000":
                raise
            raise HTTPException(status_code=401, detail=str(error.orig).strip()) from None
        yield session


@app.get("/accounts")
def accounts(session: Session = Depends(tenant_session)) -> list[dict]:
    rows = session.execute(text("SELECT id, holder, balance FROM accounts ORDER BY id"))
    return [{"id": r.id, "holder": r.holder, "balance": str(r.balance)} for r in rows]


@app.get("/me")
def me(session: Session = Depends(tenant_session)) -> dict:
    row = session.execute(text("SELECT pgtenant.current_tenant()::text AS tenant, pgtenant.current_subject() AS subject")).one()
    return {"tenant": row.tenant, "subject": row.subject}
