"""LISTEN/NOTIFY through pgtenant in transaction pooling, as drivers do it:
asyncpg's add_listener/remove_listener and psycopg's notifies() (autocommit,
inside a transaction, and over the extended protocol). The proxy has one
server connection: a listener that kept one would starve the senders.

Usage: listen_check.py <url-of-tenant-a> <url-of-tenant-b>
Prints "ok" or raises.
"""
import asyncio
import sys

WAIT = 20


async def next_of(queue):
    return await asyncio.wait_for(queue.get(), WAIT)


async def with_asyncpg(url_a, url_b):
    import asyncpg

    heard_a, heard_b = asyncio.Queue(), asyncio.Queue()

    def on_a(_conn, pid, channel, payload):
        heard_a.put_nowait((pid, channel, payload))

    def on_b(_conn, pid, channel, payload):
        heard_b.put_nowait((pid, channel, payload))

    listener_a = await asyncpg.connect(url_a)
    await listener_a.add_listener("jobs", on_a)
    await listener_a.add_listener("other", on_a)
    listener_b = await asyncpg.connect(url_b)
    await listener_b.add_listener("jobs", on_b)
    sender_a = await asyncpg.connect(url_a)
    sender_b = await asyncpg.connect(url_b)

    await sender_a.execute("NOTIFY jobs, 'a1'")
    await sender_a.execute("SELECT pg_notify($1, $2)", "jobs", "a2")
    await sender_b.execute("NOTIFY jobs, 'b1'")
    pid_a = sender_a.get_server_pid()
    assert await next_of(heard_a) == (pid_a, "jobs", "a1")
    assert await next_of(heard_a) == (pid_a, "jobs", "a2")
    # Had tenant a's crossed over, they would come before b's own.
    assert await next_of(heard_b) == (sender_b.get_server_pid(), "jobs", "b1")

    # The listener's own statements still run between notifications.
    assert await listener_a.fetchval("SELECT 41 + 1") == 42
    await listener_a.remove_listener("jobs", on_a)
    await sender_a.execute("NOTIFY jobs, 'unheard'; NOTIFY other, 'heard'")
    assert await next_of(heard_a) == (pid_a, "other", "heard")
    assert heard_a.empty() and heard_b.empty()
    for conn in (listener_a, listener_b, sender_a, sender_b):
        await conn.close()


async def with_psycopg(url_a, url_b):
    import psycopg

    # psycopg's default: a transaction, which the LISTEN waits for. It holds
    # the one server connection until its commit.
    in_transaction = await psycopg.AsyncConnection.connect(url_a)
    await in_transaction.execute("LISTEN later")
    await in_transaction.commit()
    listener = await psycopg.AsyncConnection.connect(url_a, autocommit=True)
    await listener.execute("LISTEN jobs")
    # Extended protocol: a server-side prepared LISTEN.
    await listener.execute("LISTEN prepared", prepare=True)
    sender = await psycopg.AsyncConnection.connect(url_a, autocommit=True)
    other_tenant = await psycopg.AsyncConnection.connect(url_b, autocommit=True)
    await other_tenant.execute("LISTEN jobs")
    await sender.execute("NOTIFY later, 'after the commit'")
    await sender.execute("SELECT pg_notify(%s, %s)", ("jobs", "from psycopg"))
    await sender.execute("NOTIFY prepared, 'over the extended protocol'")

    got = []
    async for n in listener.notifies(timeout=WAIT, stop_after=2):
        got.append((n.channel, n.payload, n.pid))
    assert got == [
        ("jobs", "from psycopg", sender.info.backend_pid),
        ("prepared", "over the extended protocol", sender.info.backend_pid),
    ], got
    later = [n.payload async for n in in_transaction.notifies(timeout=WAIT, stop_after=1)]
    assert later == ["after the commit"], later
    # Tenant b listens on "jobs" too, and heard nothing of tenant a's.
    await other_tenant.execute("NOTIFY jobs, 'b only'")
    heard = [n.payload async for n in other_tenant.notifies(timeout=WAIT, stop_after=1)]
    assert heard == ["b only"], heard
    for conn in (listener, in_transaction, sender, other_tenant):
        await conn.close()


async def main(url_a, url_b):
    await with_asyncpg(url_a, url_b)
    await with_psycopg(url_a, url_b)
    print("ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
