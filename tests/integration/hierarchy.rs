//! Hierarchies at any scale (sql/0009): a parent sees its descendants' rows,
//! resolved from the ancestry table whatever their number and depth; a change
//! to the tree reaches open sessions at their next statement, in both pool
//! modes; the context stays the same size; nothing a session can write
//! widens what it sees. The per-row descendant check runs in C when the
//! extension pgtenant_native is installed (sql/0011, extension/), else in
//! PL/pgSQL: the tests that reach it run with both.

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

/// Which per-row descendant check and first arm the policies use (sql/0011,
/// sql/0014), and where they read the verified tenant (sql/0015).
#[derive(Clone, Copy, Debug)]
enum DescendantCheck {
    /// extension/pgtenant_native's strict context: what `migrate` chooses
    /// when the server has the extension.
    Strict,
    /// The extension's C functions over the verified tenant in sequences.
    Native,
    /// The PL/pgSQL lookup, for servers without the extension.
    ByLookup,
}

const ALL_CHECKS: [DescendantCheck; 3] = [DescendantCheck::Strict, DescendantCheck::Native, DescendantCheck::ByLookup];

/// Points the test database's policies at `check`, as `migrate` does.
async fn use_check(env: &TestEnv, check: DescendantCheck) {
    let owner = owner(env).await;
    let native = !matches!(check, DescendantCheck::ByLookup);
    owner.execute("SELECT pgtenant.use_native_descendants($1)", &[&native]).await.expect("choose the descendant check");
    owner.execute("SELECT pgtenant.use_native_policy($1)", &[&native]).await.expect("choose the policy's first arm");
    owner
        .execute("SELECT pgtenant.use_strict_context($1)", &[&matches!(check, DescendantCheck::Strict)])
        .await
        .expect("choose the context store");
    let (callee, first_arm) = match check {
        DescendantCheck::Strict => {
            ("pgtenant.native_strict_is_descendant(tenant)", "pgtenant.native_strict_policy_tenants()")
        }
        DescendantCheck::Native => ("pgtenant.native_is_descendant(tenant)", "pgtenant.native_policy_tenants()"),
        DescendantCheck::ByLookup => {
            ("pgtenant.is_descendant_by_lookup(tenant)", "pgtenant.policy_tenants_by_lookup()")
        }
    };
    let body = value(&owner, "SELECT pg_get_functiondef('pgtenant.is_descendant'::regproc)").await;
    assert!(body.contains(callee), "{check:?}: {body}");
    let body = value(&owner, "SELECT pg_get_functiondef('pgtenant.policy_tenants'::regproc)").await;
    assert!(body.contains(first_arm), "{check:?}: {body}");
}

async fn create_child(admin: &Admin, slug: &str, parent: &str) -> String {
    let reply = admin.post("/v1/tenants", &json!({"slug": slug, "name": slug, "parent": parent})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()["id"].as_str().expect("the new tenant's id").to_owned()
}

/// What the server recorded with the session's verified tenant (sql/0009), in
/// either store (sql/0015):
/// whether it has descendants, and whether the record is of the tree's
/// published version.
async fn recorded_scope(client: &Client) -> String {
    value(
        client,
        "SELECT CASE scope & 3 WHEN 0 THEN 'leaf' WHEN 1 THEN 'parent' ELSE 'large parent' END
                || CASE WHEN scope >> 2 = pg_sequence_last_value('pgtenant.hierarchy_version')
                        THEN ', current' ELSE ', stale' END
           FROM (SELECT coalesce(nullif(current_setting('pgtenant_native.scope', true), '')::bigint,
                                 currval('pgtenant.verified_scope')) AS scope) recorded",
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
    for check in ALL_CHECKS {
        a_parent_with_many_and_deep_descendants_sees_exactly_them_with(check).await;
    }
}

async fn a_parent_with_many_and_deep_descendants_sees_exactly_them_with(check: DescendantCheck) {
    let env = start(PoolMode::Transaction).await;
    use_check(&env, check).await;
    grow_barclays(&env).await;
    add_account(&env, 30, BC_7).await;
    add_account(&env, 31, DEEPEST).await;
    let admin = admin(&env);
    let reply =
        admin.post("/v1/tenants/deep-75/logins", &json!({"username": "deep_middle", "password": PASSWORD})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());

    let barclays = env.connect("barclays_ops").await;
    let middle = env.connect("deep_middle").await;
    let hsbc = env.connect("hsbc_admin").await;
    let hk = env.connect("hk_teller").await;
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9, 30, 31], "{check:?}");
    assert_eq!(account_ids(&middle).await, vec![31], "{check:?}: 75 levels down, 75 levels up");
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6], "{check:?}");
    let visible = value(&barclays, "SELECT cardinality(pgtenant.visible_tenants())::text").await;
    assert_eq!(visible, (1 + 100 + 150).to_string(), "visible_tenants() lists the whole subtree");

    // The context is the same size for a tenant with 250 descendants as for a leaf.
    const CONTEXT_LENGTH: &str = "SELECT length(current_setting('pgtenant.context'))::text";
    assert_eq!(value(&barclays, CONTEXT_LENGTH).await, value(&hk, CONTEXT_LENGTH).await);

    // Writes: into a descendant's rows, yes; anywhere else, the policy refuses.
    barclays
        .execute(
            "INSERT INTO accounts (id, tenant_id, iban, holder, currency) VALUES (32, $1::text::uuid, 'DEEP1', 'x', 'EUR')",
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
    assert_eq!(sqlstate(&err), "42501", "{check:?}: {}", message(&err));
    assert!(message(&err).contains("row-level security"), "{}", message(&err));
    let err = middle
        .execute(
            "INSERT INTO accounts (tenant_id, iban, holder, currency) VALUES ($1::text::uuid, 'UP1', 'x', 'EUR')",
            &[&BC_7],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{check:?}: a descendant cannot write upwards or sideways");

    // A child moved out of the large tree, and a deep descendant deleted:
    // the parent's next statement no longer sees them.
    let moved = admin.patch("/v1/tenants/bc-7", &json!({"parent": "hsbc"})).await;
    assert_eq!(moved.status, 200, "{}", moved.text());
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9, 31, 32], "{check:?}: bc-7 moved to hsbc");
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6, 30], "{check:?}: hsbc gained bc-7");
    assert_eq!(admin.delete("/v1/tenants/deep-150").await.status, 204);
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "{check:?}: deep-150 deleted");
    assert!(account_ids(&middle).await.is_empty(), "{check:?}");
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
    for check in [DescendantCheck::Strict, DescendantCheck::Native] {
        nothing_a_session_writes_widens_its_visible_set_with(check).await;
    }
}

async fn nothing_a_session_writes_widens_its_visible_set_with(check: DescendantCheck) {
    let env = TestEnv::start().await;
    use_check(&env, check).await;
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

    // A visible list in the context that does not carry the key's MAC, and
    // the parent's genuine context for this very backend, written in the
    // setting: with the tenant in sequences, the setting no longer names the
    // verified tenant and there is no tenant at all; in strict context the
    // setting decides nothing and the verified tenant stays.
    let forged = format!("v1.{pid}.0123456789abcdef.{HSBC_HK}.{HSBC_HK},{BARCLAYS},{HSBC}.{}", "0".repeat(64));
    let parent = mint_token(&env, pid, HSBC, HSBC).await;
    let strict = matches!(check, DescendantCheck::Strict);
    let rows = if strict { vec![3, 4] } else { vec![] };
    // The forged list still names the verified tenant in its tenant field; the parent's does not.
    for (written, names_verified) in [(forged, true), (parent, false)] {
        app.batch_execute(&format!("SET pgtenant.context = '{written}'")).await.unwrap();
        assert_eq!(account_ids(&app).await, rows, "{check:?}");
        let current: Option<String> =
            app.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
        let tenant = (strict || names_verified).then(|| HSBC_HK.to_owned());
        assert_eq!(current, tenant, "{check:?}");
        assert_eq!(value(&app, "SELECT count(*)::text FROM pgtenant.tenant_ancestry").await, "0", "{check:?}");
    }
}

/// The C check (extension/pgtenant_native) trusts the verified tenant and
/// nothing a session can write: not the context setting, not the
/// extension, not the choice of check.
#[tokio::test]
async fn the_native_check_trusts_only_the_verified_tenant() {
    let env = TestEnv::start().await;
    let installed = value(
        &env.superuser().await,
        "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'pgtenant_native'), 'missing')",
    )
    .await;
    assert_eq!(installed, "1.2", "migrate installs pgtenant_native when the server has it (make -C extension install)");
    let first_arm =
        value(&env.superuser().await, "SELECT pg_get_functiondef('pgtenant.policy_tenants'::regproc)").await;
    assert!(first_arm.contains("pgtenant.native_strict_policy_tenants()"), "migrate chose strict context: {first_arm}");
    use_check(&env, DescendantCheck::Native).await;
    grow_barclays(&env).await;
    add_account(&env, 30, BC_7).await;
    let app = guard_bypassed(&env).await;
    let pid: i32 = app.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let barclays = mint_token(&env, pid, BARCLAYS, BARCLAYS).await;
    app.query_one("SELECT pgtenant.set_context($1, 'app.tenant_id')", &[&barclays]).await.unwrap();
    assert_eq!(account_ids(&app).await, vec![7, 8, 9, 30]);
    let bc_7_descends = format!("SELECT pgtenant.native_is_descendant('{BC_7}')::text");
    assert_eq!(value(&app, &bc_7_descends).await, "true");

    for attack in [
        "SELECT pgtenant.use_native_descendants(false)",
        "DROP EXTENSION pgtenant_native",
        "ALTER EXTENSION pgtenant_native DROP FUNCTION pgtenant.native_is_descendant(uuid)",
        "CREATE OR REPLACE FUNCTION pgtenant.native_is_descendant(tenant uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
        "CREATE OR REPLACE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true'",
        "SELECT pgtenant.use_native_policy(false)",
        "SELECT pgtenant.use_strict_context(true)",
        "CREATE OR REPLACE FUNCTION pgtenant.native_policy_tenants() RETURNS uuid[] LANGUAGE sql AS 'SELECT NULL::uuid[]'",
        "CREATE OR REPLACE FUNCTION pgtenant.policy_tenants() RETURNS uuid[] LANGUAGE sql AS 'SELECT NULL::uuid[]'",
        "CREATE OR REPLACE FUNCTION pgtenant.native_policy_range_start() RETURNS uuid LANGUAGE sql AS 'SELECT NULL::uuid'",
    ] {
        let err = app.batch_execute(attack).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{attack}: {}", message(&err));
        assert_eq!(account_ids(&app).await, vec![7, 8, 9, 30], "after {attack}");
    }

    // The context changed in the middle of one statement: the rows after the
    // change are checked against the new setting, which names no verified tenant.
    let rows = app
        .query(
            &format!(
                "SELECT n, pgtenant.native_is_descendant(CASE WHEN setting IS NOT NULL THEN '{BC_7}'::uuid END)
                   FROM (SELECT n, set_config('pgtenant.context',
                                              CASE WHEN n = 1 THEN current_setting('pgtenant.context') ELSE 'v1.forged' END,
                                              false) AS setting
                           FROM (VALUES (1), (2)) v(n) OFFSET 0) changes"
            ),
            &[],
        )
        .await
        .unwrap();
    let answers: Vec<bool> = rows.iter().map(|row| row.get(1)).collect();
    assert_eq!(answers, vec![true, false]);
    assert!(account_ids(&app).await.is_empty(), "a forged setting: no tenant at all");

    // Another tenant's genuine context for this backend, written in the
    // setting: it does not name the verified tenant, so nothing descends.
    let hsbc = mint_token(&env, pid, HSBC, HSBC).await;
    app.batch_execute(&format!("SET pgtenant.context = '{hsbc}'")).await.unwrap();
    assert_eq!(value(&app, &bc_7_descends).await, "false");
    assert_eq!(value(&app, &format!("SELECT pgtenant.native_is_descendant('{HSBC_HK}')::text")).await, "false");
    assert!(account_ids(&app).await.is_empty());
    app.batch_execute("RESET pgtenant.context").await.unwrap();
    assert_eq!(value(&app, &bc_7_descends).await, "false");
    assert_eq!(value(&app, "SELECT pgtenant.native_is_descendant(NULL)::text").await, "false");
    // The first arm names no tenant; the range start (a pre-filter only) is the PL/pgSQL one's.
    let first_arm = "SELECT pgtenant.native_policy_tenants()::text || ' ' \
                            || (pgtenant.native_policy_range_start() = pgtenant.policy_range_start_by_lookup())";
    assert_eq!(value(&app, first_arm).await, "{} true", "no context");
    app.batch_execute(&format!("SET pgtenant.context = '{hsbc}'")).await.unwrap();
    assert_eq!(value(&app, first_arm).await, "{} true", "another tenant's context");
    app.batch_execute("SET pgtenant.context = 'v1.forged'").await.unwrap();
    assert_eq!(value(&app, first_arm).await, "{} true", "a forged setting");
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
        for check in ALL_CHECKS {
            let env = start(mode).await;
            use_check(&env, check).await;
            grow_barclays(&env).await;
            let hsbc = env.connect("hsbc_admin").await;
            let hk = env.connect("hk_teller").await;
            let barclays = env.connect("barclays_ops").await;
            let functions: &[&str] = match check {
                DescendantCheck::Strict => &["is_descendant", "native_strict_is_descendant"],
                _ => &["is_descendant", "is_descendant_by_lookup", "native_is_descendant"],
            };
            for function in functions {
                let check_of = |tenant: &str| format!("SELECT pgtenant.{function}('{tenant}')::text");
                let case = format!("{mode:?}, {check:?}, {function}");
                assert_eq!(value(&hsbc, &check_of(HSBC_HK)).await, "true", "{case}");
                assert_eq!(value(&hsbc, &check_of(BC_7)).await, "false", "{case}: another group's tree");
                assert_eq!(value(&hk, &check_of(HSBC_LONDON)).await, "false", "{case}: a sibling");
                assert_eq!(value(&hk, &check_of(HSBC)).await, "false", "{case}: an ancestor");
                assert_eq!(value(&hk, &check_of(HSBC_HK)).await, "false", "{case}: itself");
                assert_eq!(value(&barclays, &check_of(DEEPEST)).await, "true", "{case}: 151 levels down");
                assert_eq!(value(&barclays, &check_of(HSBC_HK)).await, "false", "{case}");
                // Outside a pgtenant session there is no tenant, so nothing descends from it.
                assert_eq!(value(&env.superuser().await, &check_of(HSBC_HK)).await, "false", "{case}");
            }
        }
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
