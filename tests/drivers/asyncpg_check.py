"""asyncpg through pgtenant: prepared statements, a connection pool that
resets connections on release (RESET ALL), and tenant isolation.

Usage: asyncpg_check.py <url-of-tenant-a> <url-of-tenant-b> <expected ids a> <expected ids b>
Prints "ok" or raises.
"""
import asyncio
import sys


async def main(url_a, url_b, ids_a, ids_b):
    import asyncpg

    pool_a = await asyncpg.create_pool(url_a, min_size=2, max_size=2)
    pool_b = await asyncpg.create_pool(url_b, min_size=2, max_size=2)
    query = "SELECT id FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id"
    every = list(range(1, 10))
    for _ in range(20):
        async with pool_a.acquire() as conn:
            rows = await conn.fetch(query, every)
            assert [r["id"] for r in rows] == ids_a, rows
            statement = await conn.prepare("SELECT holder FROM accounts WHERE id = $1")
            await statement.fetchval(ids_a[0])
            await conn.execute("SET application_name = 'asyncpg-a'")
        async with pool_b.acquire() as conn:
            rows = await conn.fetch(query, every)
            assert [r["id"] for r in rows] == ids_b, rows
            name = await conn.fetchval("SELECT current_setting('application_name')")
            assert name != "asyncpg-a", name
        async with pool_a.acquire() as conn:
            async with conn.transaction():
                await conn.execute("UPDATE accounts SET balance = balance WHERE id = $1", ids_a[0])
                count = await conn.fetchval("SELECT count(*) FROM accounts")
                assert count == len(ids_a), count
    await pool_a.close()
    await pool_b.close()
    print("ok")


if __name__ == "__main__":
    a, b = sys.argv[1], sys.argv[2]
    ids = [[int(x) for x in arg.split(",")] for arg in sys.argv[3:5]]
    asyncio.run(main(a, b, ids[0], ids[1]))
