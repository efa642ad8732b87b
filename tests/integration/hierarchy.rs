//! Hierarchies at any scale (sql/0009): a parent sees its descendants' rows,
//! resolved from the ancestry table whatever their number and depth; a change
//! to the tree reaches open sessions at their next statement, in both pool
//! modes; the context stays the same size; nothing a session can write
//! widens what it sees.

use serde_json::json;
use tokio_postgres::Client;

use crate::common::http::Admin;
use crate::common::*;
use crate::security::{guard_bypassed, mint_token};
use pgtenant::config::PoolMode;

const BOTH_MODES: [PoolMode; 2] = [PoolMode::Session, PoolMode::Transaction];

async fn start(mode: PoolMode) -> TestEnv {
    TestEnv::start_with(|c| c.pool.mode = mode).await
}

fn admin(env: &TestEnv) -> Admin {
    Admin::new(env.server.admin_addr, &env.config.admin.token)
}

/// The catalog owner's own connection (what `pgtenant migrate` and the admin API use).
async fn owner(env: &TestEnv) -> Client {
    connect_url(&env.cluster.url("pgtenant_owner", &env.database)).await
}

async fn create_child(admin: &Admin, slug: &str, parent: &str) -> String {
    let reply = admin.post("/v1/tenants", &json!({"slug": slug, "name": slug, "parent": parent})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().expect("the new tenant's id").to_owned()
}

/// What the server recorded with the session's verified tenant (sql/0009):
/// whether it has descendants, and whether the record is of the tree's
/// published version.
async fn recorded_scope(client: &Client) -> String {
    value(
        client,
        "SELECT CASE currval('pgtenant.verified_scope') & 3 WHEN 0 THEN 'leaf' WHEN 1 THEN 'parent' ELSE 'large parent' END
                || CASE WHEN currval('pgtenant.verified_scope') >> 2 = pg_sequence_last_value('pgtenant.hierarchy_version')
                        THEN ', current' ELSE ', stale' END",
    )
    .await
}

async fn add_account(env: &TestEnv, id: i64, tenant: &str) {
    env.superuser()
        .await
        .execute(
            "INSERT INTO accounts (id, tenant_id, iban, holder, currency) VALUES ($1, $2::text::uuid, 'IBAN' || $1::bigint::text, 'Holder', 'EUR')",
            &[&id, &tenant],
        )
        .await
        .expect("insert an account");
}

#[tokio::test]
async fn tree_changes_reach_open_sessions_at_their_next_statement() {
    for mode in BOTH_MODES {
        let env = start(mode).await;
        let admin = admin(&env);
        let hsbc = env.connect("hsbc_admin").await;
        let hk = env.connect("hk_teller").await;
        let london = env.connect("london_auditor").await;
        let barclays = env.connect("barclays_ops").await;
        assert_eq!(account_ids(&hk).await, vec![3, 4], "{mode:?}");
        assert_eq!(recorded_scope(&hk).await, "leaf, current", "{mode:?}");

        // A leaf gains a child: its session sees the child's rows next statement.
        let kowloon = create_child(&admin, "hk-kowloon", "hsbc-hk").await;
        add_account(&env, 20, &kowloon).await;
        assert_eq!(account_ids(&hk).await, vec![3, 4, 20], "{mode:?}: a new child of a leaf");
        // And once the new version is published, pgtenant installs the context
        // again: the server records the child, and reads no stale record.
        eventually("hk's context to record its child", || async { recorded_scope(&hk).await == "parent, current" })
            .await;
        assert_eq!(account_ids(&hk).await, vec![3, 4, 20], "{mode:?}");
        assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6, 20], "{mode:?}: a new grandchild");
        assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}");

        // Moved: the old ancestors stop seeing it, the new ones start.
        let moved = admin.patch("/v1/tenants/hk-kowloon", &json!({"parent": "hsbc-london"})).await;
        assert_eq!(moved.status, 200, "{}", moved.text());
        assert_eq!(account_ids(&hk).await, vec![3, 4], "{mode:?}: moved away from hsbc-hk");
        assert_eq!(account_ids(&london).await, vec![5, 6, 20], "{mode:?}: moved under hsbc-london");

        // A subtree moved to another group: the whole of it changes hands.
        let moved = admin.patch("/v1/tenants/hsbc-london", &json!({"parent": "barclays"})).await;
        assert_eq!(moved.status, 200, "{}", moved.text());
        assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4], "{mode:?}: hsbc lost hsbc-london and its child");
        assert_eq!(account_ids(&barclays).await, vec![5, 6, 7, 8, 9, 20], "{mode:?}: barclays gained them");
        let updated = hsbc.execute("UPDATE accounts SET holder = 'taken' WHERE id IN (5, 20)", &[]).await.unwrap();
        assert_eq!(updated, 0, "{mode:?}: the old parent can no longer write the moved rows");
        let updated = barclays.execute("UPDATE accounts SET holder = 'kept' WHERE id IN (5, 20)", &[]).await.unwrap();
        assert_eq!(updated, 2, "{mode:?}: the new parent can");

        // Deleted: its rows belong to no tenant anyone descends from.
        assert_eq!(admin.delete("/v1/tenants/hk-kowloon").await.status, 204);
        assert_eq!(account_ids(&london).await, vec![5, 6], "{mode:?}: a deleted child");
        assert_eq!(account_ids(&barclays).await, vec![5, 6, 7, 8, 9], "{mode:?}: a deleted grandchild");
    }
}

/// Under barclays: 100 children (more than the 64 listed in the first arm
/// of the policy), and under the first of them a chain 150 deep.
async fn grow_barclays(env: &TestEnv) {
    owner(env)
        .await
        .batch_execute(&format!(
            "INSERT INTO pgtenant.tenants (id, slug, name, parent_id)
             SELECT ('c0000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'bc-' || g, 'BC ' || g, '{BARCLAYS}'
               FROM generate_series(1, 100) g;
             DO $$
             BEGIN
                 FOR depth IN 1..150 LOOP
                     INSERT INTO pgtenant.tenants (id, slug, name, parent_id) VALUES (
                         ('d0000000-0000-4000-8000-' || lpad(depth::text, 12, '0'))::uuid, 'deep-' || depth, 'Deep',
                         CASE WHEN depth = 1 THEN 'c0000000-0000-4000-8000-000000000001'::uuid
                              ELSE ('d0000000-0000-4000-8000-' || lpad((depth - 1)::text, 12, '0'))::uuid END);
                 END LOOP;
             END
             $$;"
        ))
        .await
        .expect("grow barclays");
}

const BC_7: &str = "c0000000-0000-4000-8000-000000000007";
const DEEPEST: &str = "d0000000-0000-4000-8000-000000000150";

#[tokio::test]
async fn a_parent_with_many_and_deep_descendants_sees_exactly_them() {
    let env = start(PoolMode::Transaction).await;
    grow_barclays(&env).await;
    add_account(&env, 30, BC_7).await;
    add_account(&env, 31, DEEPEST).await;
    let reply =
        admin(&env).post("/v1/tenants/deep-75/logins", &json!({"username": "deep_middle", "password": PASSWORD})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    let barclays = env.connect("barclays_ops").await;
    let middle = env.connect("deep_middle").await;
    let hsbc = env.connect("hsbc_admin").await;
    let hk = env.connect("hk_teller").await;
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9, 30, 31]);
    assert_eq!(account_ids(&middle).await, vec![31], "75 levels down, 75 levels up");
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6]);
    let visible = value(&barclays, "SELECT cardinality(pgtenant.visible_tenants())::text").await;
    assert_eq!(visible, (1 + 100 + 150).to_string(), "visible_tenants() lists the whole subtree");

    // The context is the same size for a tenant with 250 descendants as for a leaf.
    const CONTEXT_LENGTH: &str = "SELECT length(current_setting('pgtenant.context'))::text";
    assert_eq!(value(&barclays, CONTEXT_LENGTH).await, value(&hk, CONTEXT_LENGTH).await);

    // Writes: into a descendant's rows, yes; anywhere else, the policy refuses.
    barclays
        .execute(
            "INSERT INTO accounts (tenant_id, iban, holder, currency) VALUES ($1::text::uuid, 'DEEP1', 'x', 'EUR')",
            &[&DEEPEST],
        )
        .await
        .expect("a parent writes its deepest descendant's rows");
    let err = barclays
        .execute(
            "INSERT INTO accounts (tenant_id, iban, holder, currency) VALUES ($1::text::uuid, 'HSBC9', 'x', 'EUR')",
            &[&HSBC],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{}", message(&err));
    assert!(message(&err).contains("row-level security"), "{}", message(&err));
    let err = middle
        .execute(
            "INSERT INTO accounts (tenant_id, iban, holder, currency) VALUES ($1::text::uuid, 'UP1', 'x', 'EUR')",
            &[&BC_7],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "a descendant cannot write upwards or sideways");
}

/// A tenant-scoped table large enough for the planner to prefer its index.
async fn ledger(env: &TestEnv) {
    let owner = owner(env).await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE public.ledger (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, amount int NOT NULL);
             INSERT INTO public.ledger (tenant_id, amount)
             SELECT ('c0000000-0000-4000-8000-' || lpad((1 + g % 100)::text, 12, '0'))::uuid, g FROM generate_series(1, 20000) g;
             INSERT INTO public.ledger (tenant_id, amount) SELECT '{HSBC_HK}', g FROM generate_series(1, 200) g;
             SELECT pgtenant.enable_tenancy('public.ledger');
             ANALYZE public.ledger;"
        ))
        .await
        .expect("create the ledger");
}

async fn plan(client: &Client, sql: &str) -> String {
    let rows =
        client.simple_query(&format!("EXPLAIN (COSTS OFF) {sql}")).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn policies_leave_the_tenant_index_to_the_planner() {
    let env = start(PoolMode::Session).await;
    grow_barclays(&env).await;
    ledger(&env).await;
    let barclays = env.connect("barclays_ops").await;
    let hk = env.connect("hk_teller").await;

    // A parent with 250 descendants naming one of them: an index scan on it.
    let sql = format!("SELECT sum(amount) FROM ledger WHERE tenant_id = '{BC_7}'");
    let parent_plan = plan(&barclays, &sql).await;
    assert!(
        parent_plan.contains("Index Cond: ((tenant_id >= $") || parent_plan.contains("Index Cond: (tenant_id = "),
        "{parent_plan}"
    );
    assert!(parent_plan.contains(&format!("tenant_id = '{BC_7}'::uuid")), "{parent_plan}");
    assert!(!parent_plan.contains("Seq Scan on ledger"), "{parent_plan}");
    assert_eq!(value(&barclays, &sql).await, (1..=20000).filter(|g| 1 + g % 100 == 7).sum::<i64>().to_string());

    // A leaf without a filter of its own: the policy's tenant list is the index condition.
    let leaf_plan = plan(&hk, "SELECT sum(amount) FROM ledger").await;
    assert!(leaf_plan.contains("Index Cond: (tenant_id = ANY ($"), "{leaf_plan}");
    assert!(!leaf_plan.contains("Seq Scan on ledger"), "{leaf_plan}");
    assert_eq!(value(&hk, "SELECT sum(amount) FROM ledger").await, (1..=200).sum::<i64>().to_string());
}

#[tokio::test]
async fn nothing_a_session_writes_widens_its_visible_set() {
    let env = TestEnv::start().await;
    let app = guard_bypassed(&env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let token = mint_token(&env, pid, HSBC_HK, HSBC_HK).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&token]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![3, 4]);

    // The recorded scope, the published version, the tree and the functions
    // that maintain them belong to the catalog owner.
    for attack in [
        "SELECT setval('pgtenant.verified_scope', 2)",
        "SELECT setval('pgtenant.verified_scope', 4 * pg_sequence_last_value('pgtenant.hierarchy_version') + 2)",
        "SELECT setval('pgtenant.hierarchy_version', 0)",
        "INSERT INTO pgtenant.tenant_ancestry VALUES ('a0000000-0000-4000-8000-000000000002', 'b0000000-0000-4000-8000-000000000001')",
        "UPDATE pgtenant.tenant_ancestry SET ancestor_id = 'a0000000-0000-4000-8000-000000000002'",
        "DELETE FROM pgtenant.tenant_ancestry",
        "UPDATE pgtenant.hierarchy_state SET version = 0",
        "SELECT pgtenant.record_scope('a0000000-0000-4000-8000-000000000001')",
        "SELECT pgtenant.publish_hierarchy_version()",
        "SELECT pgtenant.hierarchy_changed()",
        "SELECT pgtenant.create_isolation_policy('accounts', 'tenant_id')",
    ] {
        let err = app.batch_execute(attack).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{attack}: {}", message(&err));
        assert_eq!(account_ids(&app).await, vec![3, 4], "after {attack}");
    }

    // The ancestry reads as the session's own descendants only: none for a leaf.
    assert_eq!(value(&app, "SELECT count(*)::text FROM pgtenant.tenant_ancestry").await, "0");

    // A visible list in the context that does not carry the key's MAC: not
    // even the session's own rows.
    let forged = format!("v1.{pid}.0123456789abcdef.{HSBC_HK}.{HSBC_HK},{BARCLAYS},{HSBC}.{}", "0".repeat(64));
    app.batch_execute(&format!("SET pgtenant.context = '{forged}'")).await.unwrap();
    assert!(account_ids(&app).await.is_empty());
    // The parent's genuine context for this very backend, written in the setting: it
    // does not name the verified tenant, so there is no tenant at all.
    let parent = mint_token(&env, pid, HSBC, HSBC).await;
    app.batch_execute(&format!("SET pgtenant.context = '{parent}'")).await.unwrap();
    assert!(account_ids(&app).await.is_empty());
    let nothing: Option<String> = app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(nothing, None);
    assert_eq!(value(&app, "SELECT count(*)::text FROM pgtenant.tenant_ancestry").await, "0");
}

#[tokio::test]
async fn a_parent_reads_only_its_own_branch_of_the_tree() {
    for mode in BOTH_MODES {
        let env = start(mode).await;
        grow_barclays(&env).await;
        let hsbc = env.connect("hsbc_admin").await;
        let hk = env.connect("hk_teller").await;
        let ancestry = "SELECT count(*)::text FROM pgtenant.tenant_ancestry";
        assert_eq!(value(&hsbc, ancestry).await, "2", "{mode:?}: hsbc's two children");
        assert_eq!(value(&hk, ancestry).await, "0", "{mode:?}: nothing under a leaf");
        assert_eq!(
            value(
                &hsbc,
                "SELECT count(*)::text FROM pgtenant.tenant_ancestry WHERE ancestor_id <> pgtenant.current_tenant()"
            )
            .await,
            "0",
            "{mode:?}: not barclays' 250"
        );
        // The range arm stays shut for a tenant with few descendants.
        assert_eq!(
            value(&hsbc, "SELECT pgtenant.policy_range_start()::text").await,
            "ffffffff-ffff-ffff-ffff-ffffffffffff"
        );
        for attack in ["SELECT setval('pgtenant.verified_scope', 2)", "DELETE FROM pgtenant.tenant_ancestry"] {
            let err = hk.simple_query(attack).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{mode:?}: {attack}: {}", message(&err));
        }
        assert_eq!(account_ids(&hk).await, vec![3, 4], "{mode:?}");
        assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6], "{mode:?}");
    }
}

#[tokio::test]
async fn the_policys_descendant_check_answers_only_about_the_sessions_own_subtree() {
    for mode in BOTH_MODES {
        let env = start(mode).await;
        grow_barclays(&env).await;
        let hsbc = env.connect("hsbc_admin").await;
        let hk = env.connect("hk_teller").await;
        let barclays = env.connect("barclays_ops").await;
        let check = |tenant: &str| format!("SELECT pgtenant.is_descendant('{tenant}')::text");
        assert_eq!(value(&hsbc, &check(HSBC_HK)).await, "true", "{mode:?}");
        assert_eq!(value(&hsbc, &check(BC_7)).await, "false", "{mode:?}: another group's tree");
        assert_eq!(value(&hk, &check(HSBC_LONDON)).await, "false", "{mode:?}: a sibling");
        assert_eq!(value(&hk, &check(HSBC)).await, "false", "{mode:?}: an ancestor");
        assert_eq!(value(&barclays, &check(DEEPEST)).await, "true", "{mode:?}: 151 levels down");
        assert_eq!(value(&barclays, &check(HSBC_HK)).await, "false", "{mode:?}");
        // Outside a pgtenant session there is no tenant, so nothing descends from it.
        assert_eq!(value(&env.superuser().await, &check(HSBC_HK)).await, "false", "{mode:?}");
    }
}

/// Pairs where the ancestry table and the parent links disagree.
const ANCESTRY_MISMATCHES: &str = "WITH RECURSIVE up(tenant_id, ancestor_id) AS (
         SELECT id, parent_id FROM pgtenant.tenants WHERE parent_id IS NOT NULL
         UNION
         SELECT up.tenant_id, t.parent_id FROM up JOIN pgtenant.tenants t ON t.id = up.ancestor_id WHERE t.parent_id IS NOT NULL)
     SELECT count(*) FROM ((SELECT tenant_id, ancestor_id FROM up EXCEPT SELECT tenant_id, ancestor_id FROM pgtenant.tenant_ancestry)
                           UNION ALL
                           (SELECT tenant_id, ancestor_id FROM pgtenant.tenant_ancestry EXCEPT SELECT tenant_id, ancestor_id FROM up)) d";

#[tokio::test]
async fn concurrent_moves_take_turns_and_leave_the_ancestry_whole() {
    let env = TestEnv::start().await;
    let first = owner(&env).await;
    let second = owner(&env).await;
    let watcher = env.superuser().await;
    // hsbc-london moves under hsbc-hk in a transaction left open; meanwhile
    // hsbc-hk (which is about to carry hsbc-london) moves under barclays.
    first
        .batch_execute(&format!(
            "BEGIN; UPDATE pgtenant.tenants SET parent_id = '{HSBC_HK}' WHERE id = '{HSBC_LONDON}'"
        ))
        .await
        .unwrap();
    let pid: i32 = second.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let moving = tokio::spawn(async move {
        second
            .batch_execute(&format!("UPDATE pgtenant.tenants SET parent_id = '{BARCLAYS}' WHERE id = '{HSBC_HK}'"))
            .await
    });
    eventually("the second move to wait for the first", || async {
        let waiting = watcher
            .query_one("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .map(|row| row.get::<_, Option<bool>>(0));
        matches!(waiting, Ok(Some(true)))
    })
    .await;
    first.batch_execute("COMMIT").await.unwrap();
    moving.await.unwrap().expect("the second move, after the first");
    let mismatches: i64 = watcher.query_one(ANCESTRY_MISMATCHES, &[]).await.unwrap().get(0);
    assert_eq!(mismatches, 0, "the ancestry is the closure of the parent links");
    // hsbc-london went along with hsbc-hk: hsbc keeps nothing of either.
    assert_eq!(account_ids(&env.connect("hsbc_admin").await).await, vec![1, 2]);
    assert_eq!(account_ids(&env.connect("barclays_ops").await).await, vec![3, 4, 5, 6, 7, 8, 9]);
}
