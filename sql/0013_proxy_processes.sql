-- pgtenant 0013: the pgtenant processes serving this catalog. Behind a load
-- balancer, or sharing a port with SO_REUSEPORT, a client's CancelRequest can
-- reach a process that does not hold its session: that process passes the
-- request on to the others at the addresses they registered here
-- (proxy.cancel_listen). Each process refreshes its row while it runs and
-- deletes it when it stops; rows not refreshed for a minute are a crashed
-- process's and are deleted by the others.
CREATE TABLE pgtenant.proxy_processes (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cancel_addr  text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    seen_at      timestamptz NOT NULL DEFAULT now()
);
-- The catalog owner's alone: session roles have no business with it.
REVOKE ALL ON pgtenant.proxy_processes FROM PUBLIC;
