//! The transparency corpus: the same protocol exchanges sent to PostgreSQL
//! directly (as the session role, with the same verified tenant context) and
//! through pgtenant, in session and in transaction pooling. The replies must
//! be the same messages, byte for byte, except for what is normalised:
//! - the process id in NotificationResponse (each side's own);
//! - table OIDs of RowDescription fields at or above 16384 (objects the
//!   cases create get different OIDs in the two databases).
//!
//! Refusals by design are not here: README "What drivers may meet".

use bytes::{BufMut, BytesMut};
use pgtenant::config::PoolMode;
use postgres_protocol::message::frontend;
use postgres_protocol::IsNull;

use crate::common::raw::{self, Message, RawSession};
use crate::common::*;

/// One exchange: frontend messages, sent at once.
type Step = BytesMut;

fn query(sql: &str) -> Step {
    let mut out = BytesMut::new();
    frontend::query(sql, &mut out).unwrap();
    out
}

/// Parse/Bind/Describe/Execute/Sync of an unnamed statement; `params` in
/// text format, results in `result_format` (0 text, 1 binary).
fn extended(sql: &str, params: &[Option<&str>], result_format: i16) -> Step {
    let mut out = BytesMut::new();
    put_extended(&mut out, "", sql, params, result_format, 0);
    frontend::sync(&mut out);
    out
}

fn put_extended(out: &mut BytesMut, name: &str, sql: &str, params: &[Option<&str>], result_format: i16, rows: i32) {
    frontend::parse(name, sql, [], out).unwrap();
    put_bind(out, name, params, result_format);
    frontend::describe(b'P', "", out).unwrap();
    frontend::execute("", rows, out).unwrap();
}

fn put_bind(out: &mut BytesMut, name: &str, params: &[Option<&str>], result_format: i16) {
    frontend::bind(
        "",
        name,
        [0i16],
        params.iter(),
        |param, buf| match param {
            Some(value) => {
                buf.put_slice(value.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        },
        [result_format],
        out,
    )
    .map_err(|_| "bind")
    .unwrap();
}

/// Extended-protocol statements one after another under one Sync.
fn pipeline(statements: &[&str]) -> Step {
    let mut out = BytesMut::new();
    for sql in statements {
        put_extended(&mut out, "", sql, &[], 0, 0);
    }
    frontend::sync(&mut out);
    out
}

/// COPY … FROM STDIN with its data, pipelined.
fn copy_in(sql: &str, data: &[u8]) -> Step {
    let mut out = query(sql);
    out.put_u8(b'd');
    out.put_i32(4 + data.len() as i32);
    out.put_slice(data);
    frontend::copy_done(&mut out);
    out
}

const TYPES: &str = "SELECT 1::int2, 2::int4, 3::int8, 1.5::float4, 2.5::float8, 3.25::numeric(6,3), true, \
    'a'::char(3), 'b'::varchar(4), 'c'::text, '\\x0102'::bytea, '2024-01-02'::date, '12:34:56.789'::time, \
    '2024-01-02 03:04:05.678+00'::timestamptz, '2024-01-02 03:04:05'::timestamp, '1 day 02:03:04'::interval, \
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '{\"a\": [1, 2]}'::json, '{\"a\": [1, 2]}'::jsonb, \
    '{1,NULL,3}'::int4[], '{{a,b},{c,d}}'::text[], '127.0.0.1'::inet, '10.0.0.0/8'::cidr, \
    '08:00:2b:01:02:03'::macaddr, '(1,2)'::point, '[1,5)'::int4range, B'101'::bit(3), 'a & b'::tsquery, \
    'fat cats'::tsvector, 'x'::name, 1::oid, 'pg_class'::regclass, '12.34'::money, '<a>x</a>'::xml, \
    NULL::int, ''::text, 'it''s \"quoted\" \\ here'::text, 'Ω ≈ ç'::text";

/// The corpus, in order, on one session per side.
fn corpus() -> Vec<(&'static str, Step)> {
    let mut named = BytesMut::new();
    frontend::parse("s1", "SELECT id, holder FROM accounts WHERE id > $1::int ORDER BY id", [], &mut named).unwrap();
    frontend::describe(b'S', "s1", &mut named).unwrap();
    put_bind(&mut named, "s1", &[Some("0")], 0);
    frontend::execute("", 0, &mut named).unwrap();
    put_bind(&mut named, "s1", &[Some("3")], 1);
    frontend::execute("", 0, &mut named).unwrap();
    frontend::close(b'S', "s1", &mut named).unwrap();
    frontend::sync(&mut named);

    let mut portal = query("BEGIN");
    put_extended(&mut portal, "", "SELECT id FROM accounts ORDER BY id", &[], 0, 1);
    frontend::execute("", 1, &mut portal).unwrap();
    frontend::execute("", 0, &mut portal).unwrap();
    frontend::sync(&mut portal);
    portal.extend_from_slice(&query("COMMIT"));

    vec![
        ("constants", query("SELECT 1 AS one, 'x'::text AS two, NULL::int AS three")),
        ("multi-statement", query("SELECT 1; SELECT 2 AS b, 3 AS c; SELECT 'last'")),
        ("empty query", query("")),
        ("tenant rows", query("SELECT id, holder, currency, balance FROM accounts ORDER BY id")),
        ("tenant context", query("SELECT pgtenant.current_tenant(), current_setting('app.tenant_id')")),
        ("types as text", query(TYPES)),
        ("types as text, extended", extended(TYPES, &[], 0)),
        ("types as binary", extended(TYPES, &[], 1)),
        (
            "parameters",
            extended(
                "SELECT $1::int4 + 1, $2::text || '!', $3::numeric * 2, $4::date, $5::jsonb -> 'a', $6::bool, $7::int",
                &[Some("41"), Some("hi"), Some("1.25"), Some("2024-02-29"), Some("{\"a\": 1}"), Some("t"), None],
                0,
            ),
        ),
        (
            "ddl",
            query(
                "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], \
                 doc jsonb)",
            ),
        ),
        ("drop if exists notice", query("DROP TABLE IF EXISTS no_such_table")),
        (
            "insert returning",
            query("INSERT INTO items VALUES (1, 'one', 1.50, '{a,b}', '{\"k\": 1}'), (2, 'two', NULL, NULL, NULL) RETURNING *"),
        ),
        ("update", query("UPDATE items SET price = price * 2 WHERE id = 1 RETURNING price")),
        ("unique violation", query("INSERT INTO items VALUES (1, 'again')")),
        ("not null violation", query("INSERT INTO items (id) VALUES (3)")),
        ("undefined column", query("SELECT nothing FROM items")),
        ("division by zero", query("SELECT 1 / 0")),
        ("error mid multi-statement", query("SELECT 1; SELECT 1 / 0; SELECT 3")),
        ("delete", query("DELETE FROM items WHERE id = 2")),
        ("copy out", query("COPY (SELECT id, name, price FROM items ORDER BY id) TO STDOUT")),
        ("copy out csv", query("COPY items TO STDOUT WITH (FORMAT csv, HEADER)")),
        ("copy out binary", query("COPY (SELECT id, name FROM items) TO STDOUT WITH (FORMAT binary)")),
        ("copy in", copy_in("COPY items (id, name) FROM STDIN", b"10\tten\n11\televen\n")),
        ("copy in bad data", copy_in("COPY items (id, name) FROM STDIN", b"x\tbad\n")),
        ("after copy", query("SELECT count(*) FROM items")),
        (
            "cursor",
            query(
                "BEGIN; DECLARE c CURSOR FOR SELECT id FROM accounts ORDER BY id; FETCH 1 FROM c; FETCH ALL FROM c; \
                 CLOSE c; COMMIT",
            ),
        ),
        ("begin", query("BEGIN")),
        ("insert in transaction", query("INSERT INTO items VALUES (20, 'twenty')")),
        ("savepoint", query("SAVEPOINT s1")),
        ("error in transaction", query("INSERT INTO items VALUES (20, 'dup')")),
        ("failed transaction", query("SELECT 1")),
        ("rollback to savepoint", query("ROLLBACK TO SAVEPOINT s1")),
        ("release", query("RELEASE s1")),
        ("commit", query("COMMIT")),
        ("after commit", query("SELECT id, name FROM items ORDER BY id")),
        ("named statement", named),
        ("portal with row limit", portal),
        ("pipeline with an error", pipeline(&["SELECT 1", "SELECT 1 / 0", "SELECT 3"])),
        ("after pipeline", pipeline(&["SELECT 4"])),
        ("set and show", query("SET DateStyle = 'German'; SHOW DateStyle; SELECT '2024-01-02'::date")),
        ("set application_name", query("SET application_name = 'corpus'")),
        ("reset one", query("RESET DateStyle; SELECT '2024-01-02'::date")),
        ("reset all", query("RESET ALL")),
        (
            "after reset",
            query("SHOW application_name; SHOW DateStyle; SHOW search_path; SELECT count(*) FROM accounts"),
        ),
        ("discard all", query("DISCARD ALL")),
        ("after discard", query("SHOW search_path; SELECT count(*) FROM accounts")),
        ("listen", query("LISTEN corpus")),
        ("notify self", query("NOTIFY corpus, 'payload'")),
        ("unlisten", query("UNLISTEN *")),
        ("notice", query("SET client_min_messages = notice; ALTER TABLE IF EXISTS nothing_here ADD COLUMN x int")),
        ("drop", query("DROP TABLE items")),
    ]
}

/// The number of ReadyForQuery messages a step's frontend messages end with.
fn ready_count(step: &[u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while at + 5 <= step.len() {
        let tag = step[at];
        let len = i32::from_be_bytes(step[at + 1..at + 5].try_into().unwrap()) as usize;
        if tag == b'Q' || tag == b'S' {
            count += 1;
        }
        at += 1 + len;
    }
    count
}

/// Replies to one step, normalised.
async fn run_step(session: &mut RawSession, step: &[u8]) -> Vec<(char, Vec<u8>)> {
    session.send(step).await;
    let mut replies = Vec::new();
    let mut remaining = ready_count(step);
    while remaining > 0 {
        let message = session.read().await;
        if message.tag == b'Z' {
            remaining -= 1;
        }
        replies.push(normalise(message));
    }
    replies
}

fn normalise(message: Message) -> (char, Vec<u8>) {
    let mut body = message.body;
    match message.tag {
        b'A' => body[..4].copy_from_slice(&[0; 4]),
        b'T' => {
            let fields = u16::from_be_bytes([body[0], body[1]]);
            let mut at = 2;
            for _ in 0..fields {
                at += body[at..].iter().position(|b| *b == 0).unwrap() + 1;
                let table = u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                if table >= 16_384 {
                    body[at..at + 4].copy_from_slice(&[0; 4]);
                }
                at += 18;
            }
        }
        _ => {}
    }
    (message.tag as char, body)
}

/// A direct session as the session role, with the same verified context as
/// a hsbc-hk login through pgtenant.
async fn direct_session(env: &TestEnv) -> RawSession {
    let socket = env.cluster.socket_dir.join(format!(".s.PGSQL.{}", env.cluster.socket_port()));
    let options = [("options", "-c search_path=scratch,public")];
    let mut session =
        raw::login_unix(&socket, pgtenant::dev::APP_ROLE, &env.database, &options).await.expect("direct login");
    install_context(env, &mut session).await;
    session
}

/// What pgtenant does after RESET ALL / DISCARD ALL, done by hand on the
/// direct session: the verified hsbc-hk context.
async fn install_context(env: &TestEnv, session: &mut RawSession) {
    let pid: i32 = raw::first_column(&session.query("SELECT pg_backend_pid()").await)[0].parse().unwrap();
    let key: Vec<u8> =
        env.superuser().await.query_one("SELECT key FROM pgtenant.context_key", &[]).await.unwrap().get(0);
    let context = pgtenant::tenancy::TenantContext::of(HSBC_HK.into(), HSBC_HK.into());
    let secret = [7u8; 16];
    let token = pgtenant::tenancy::context::sign_token(&key, &context, pid, &secret);
    let replies = session
        .query(&format!("SELECT pgtenant.set_context('{token}', 'app.tenant_id', '{}')", pgtenant::hex::hex(&secret)))
        .await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
}

async fn scratch_schema(env: &TestEnv) {
    env.superuser()
        .await
        .batch_execute(
            "CREATE SCHEMA scratch AUTHORIZATION pgtenant_owner;
             GRANT USAGE, CREATE ON SCHEMA scratch TO pgtenant_readwrite;",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_corpus_reads_the_same_directly_and_through_pgtenant() {
    // Transaction pooling over two server sessions; the client's LISTEN is the listen hub's.
    for (mode, size) in [(PoolMode::Session, 2), (PoolMode::Transaction, 2)] {
        let direct_env = TestEnv::start().await;
        let env = TestEnv::start_with(|c| {
            c.pool.mode = mode;
            c.pool.size = size;
        })
        .await;
        scratch_schema(&direct_env).await;
        scratch_schema(&env).await;
        let mut direct = direct_session(&direct_env).await;
        let mut through = raw::login(
            env.server.proxy_addr,
            "hk_teller",
            PASSWORD,
            &env.database,
            &[("options", "-c search_path=scratch,public")],
        )
        .await
        .expect("login through pgtenant");
        // In transaction pooling, another tenant takes the server session between steps.
        let other = env.connect("barclays_ops").await;
        let mut differences = Vec::new();
        for (name, step) in corpus() {
            let expected = run_step(&mut direct, &step).await;
            if matches!(name, "reset all" | "discard all") {
                // pgtenant keeps the context through these; PostgreSQL alone does not.
                install_context(&direct_env, &mut direct).await;
            }
            let seen = run_step(&mut through, &step).await;
            if expected != seen {
                differences.push(format!("{mode:?}: {name}\n  direct:   {expected:?}\n  pgtenant: {seen:?}"));
            }
            other.simple_query("SELECT count(*) FROM accounts").await.unwrap();
        }
        assert!(differences.is_empty(), "{} difference(s):\n{}", differences.len(), differences.join("\n"));
    }
}
