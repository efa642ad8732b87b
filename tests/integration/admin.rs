//! The admin sidecar over real HTTP against a real catalog: every route, every
//! error status, no password in any reply, sessions ended by catalog changes,
//! and propagation between two `pgtenant serve` processes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::http::{request, Admin, Reply};
use crate::common::*;

const NEW_PASSWORD: &str = "fresh-password-5678";

fn admin(env: &TestEnv) -> Admin {
    Admin::new(env.server.admin_addr, &env.config.admin.token)
}

async fn create_tenant(admin: &Admin, body: Value) -> Value {
    let reply = admin.post("/v1/tenants", &body).await;
    assert_eq!(reply.status, 201, "{body}: {}", reply.text());
    reply.json()
}

async fn create_login(admin: &Admin, tenant: &str, username: &str, access: &str) -> Value {
    let body = json!({"username": username, "password": NEW_PASSWORD, "access": access});
    let reply = admin.post(&format!("/v1/tenants/{tenant}/logins"), &body).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    reply.json()
}

fn forbidden_words_absent(reply: &Reply) {
    let text = reply.text();
    for word in [NEW_PASSWORD, PASSWORD, "SCRAM", "verifier", "password"] {
        assert!(!text.contains(word), "reply leaks {word:?}: {text}");
    }
}

#[tokio::test]
async fn v1_requires_the_bearer_token_in_the_header() {
    let env = TestEnv::start().await;
    let addr = env.server.admin_addr;
    let token = env.config.admin.token.clone();
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let basic = format!("Basic {token}");
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/v1/tenants".into(), vec![]),
        ("/v1/tenants".into(), vec![("Authorization", wrong.as_str())]),
        ("/v1/tenants".into(), vec![("Authorization", basic.as_str())]),
        ("/v1/tenants".into(), vec![("Authorization", "Bearer")]),
        (format!("/v1/tenants?access_token={token}"), vec![]),
        (format!("/v1/tenants?token={token}"), vec![]),
        ("/v1/sessions".into(), vec![]),
        ("/v1/no-such-route".into(), vec![]),
    ];
    for (path, headers) in cases {
        let reply = request(addr, "GET", &path, &headers, b"").await;
        reply.problem(401);
        assert!(
            reply.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")),
            "{path}: {:?}",
            reply.headers
        );
    }
    let reply = request(
        addr,
        "POST",
        "/v1/tenants",
        &[("Content-Type", "application/json")],
        br#"{"slug":"intruder","name":"Intruder"}"#,
    )
    .await;
    reply.problem(401);
    let reply = request(addr, "DELETE", "/v1/tenants/hsbc", &[], b"").await;
    reply.problem(401);

    let lower = format!("bearer {token}");
    let reply = request(addr, "GET", "/v1/tenants", &[("Authorization", &lower)], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = request(addr, "GET", "/v1/tenants", &[("Authorization", &bearer)], b"").await;
    assert_eq!(reply.status, 200);
    let slugs: Vec<String> =
        reply.json().as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap().to_owned()).collect();
    assert_eq!(slugs, ["barclays", "hsbc", "hsbc-hk", "hsbc-london"]);

    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = request(addr, "GET", open, &[], b"").await;
        assert_eq!(reply.status, 200, "{open}: {}", reply.text());
    }
    let reply = request(addr, "GET", "/nowhere", &[], b"").await;
    reply.problem(404);
}

#[tokio::test]
async fn tenants_are_created_read_changed_and_deleted() {
    let env = TestEnv::start().await;
    let admin = admin(&env);

    let reply = admin.post("/v1/tenants", &json!({"slug": "acme", "name": "Acme Corp"})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let acme = reply.json();
    let id = acme["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("location"), Some(format!("/v1/tenants/{id}").as_str()));
    let mut keys: Vec<&str> = acme.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "id", "isolation", "limits", "name", "parent_id", "slug", "status", "updated_at", "upstream"]
    );
    assert_eq!(acme["upstream"], "default");
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["parent_id"], Value::Null);
    assert_eq!(acme["status"], "active");
    assert_eq!(acme["isolation"], "shared");
    let created = acme["created_at"].as_str().unwrap();
    assert!(created.len() == 27 && created.ends_with('Z') && &created[10..11] == "T", "{created}");

    // Children by parent slug and by parent id; an adopted id is kept.
    let adopted = "c0000000-0000-4000-8000-0000000000aa";
    let west =
        create_tenant(&admin, json!({"slug": "acme-west", "name": "Acme West", "parent": "acme", "id": adopted})).await;
    assert_eq!(west["id"], adopted);
    assert_eq!(west["parent_id"], id.as_str());
    let east = create_tenant(&admin, json!({"slug": "acme-east", "name": "Acme East", "parent": id})).await;
    assert_eq!(east["parent_id"], id.as_str());

    // Read by id and by slug; 404 for unknown.
    assert_eq!(admin.get(&format!("/v1/tenants/{id}")).await.json(), acme);
    assert_eq!(admin.get("/v1/tenants/acme").await.json(), acme);
    admin.get("/v1/tenants/nobody").await.problem(404);
    admin.get("/v1/tenants/c0000000-0000-4000-8000-0000000000ff").await.problem(404);

    // List, and list children.
    let all = admin.get("/v1/tenants").await.json();
    assert_eq!(all.as_array().unwrap().len(), 7);
    let children = admin.get("/v1/tenants?parent=acme").await.json();
    let slugs: Vec<&str> = children.as_array().unwrap().iter().map(|t| t["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["acme-east", "acme-west"]);
    assert_eq!(admin.get(&format!("/v1/tenants?parent={id}")).await.json(), children);
    admin.get("/v1/tenants?parent=nobody").await.problem(404);

    // Duplicates.
    let detail = admin.post("/v1/tenants", &json!({"slug": "acme", "name": "Again"})).await.problem(409);
    assert!(detail.contains("slug"), "{detail}");
    let detail =
        admin.post("/v1/tenants", &json!({"slug": "other", "name": "Other", "id": adopted})).await.problem(409);
    assert!(detail.contains("id"), "{detail}");

    // Changes: name, parent by slug, parent null (a root).
    let renamed = admin.patch("/v1/tenants/acme-west", &json!({"name": "Acme West Coast"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_eq!(renamed.json()["name"], "Acme West Coast");
    assert_eq!(renamed.json()["parent_id"], id.as_str(), "absent parent stays");
    let moved = admin.patch("/v1/tenants/acme-west", &json!({"parent": "acme-east"})).await.json();
    assert_eq!(moved["parent_id"], east["id"]);
    let root = admin.patch(&format!("/v1/tenants/{adopted}"), &json!({"parent": null})).await.json();
    assert_eq!(root["parent_id"], Value::Null);
    admin.patch("/v1/tenants/acme-west", &json!({"parent": "nobody"})).await.problem(422);
    admin.patch("/v1/tenants/nobody", &json!({"name": "X"})).await.problem(404);

    // Delete: refused while children exist, then 204 and gone.
    let detail = admin.delete("/v1/tenants/acme").await.problem(409);
    assert!(detail.contains("child"), "{detail}");
    assert_eq!(admin.delete("/v1/tenants/acme-east").await.status, 204);
    assert_eq!(admin.delete("/v1/tenants/acme").await.status, 204);
    admin.get("/v1/tenants/acme").await.problem(404);
    admin.delete("/v1/tenants/acme").await.problem(404);
}

#[tokio::test]
async fn invalid_tenant_fields_are_422_and_never_reach_sql() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let cases = [
        json!({"slug": "x'; DROP TABLE pgtenant.tenants; --", "name": "Bobby"}),
        json!({"slug": "Upper", "name": "Upper"}),
        json!({"slug": "-lead", "name": "Lead"}),
        json!({"slug": "", "name": "Empty"}),
        json!({"slug": "a".repeat(64), "name": "Long"}),
        json!({"slug": "a0000000-0000-4000-8000-000000000009", "name": "Uuid-shaped"}),
        json!({"slug": "ok", "name": ""}),
        json!({"slug": "ok", "name": "   "}),
        json!({"slug": "ok", "name": "n".repeat(201)}),
        json!({"slug": "ok", "name": "Ok", "parent": "nobody"}),
        json!({"slug": "ok", "name": "Ok", "parent": "hsbc' OR '1'='1"}),
        json!({"slug": "ok", "name": "Ok", "id": "not-a-uuid"}),
        json!({"slug": "ok", "name": "Ok", "id": "00000000-0000-0000-0000-00000000000g"}),
        json!({"slug": 7, "name": "Ok"}),
        json!({"slug": "ok"}),
        json!({"slug": "ok", "name": "Ok", "status": "active"}),
        json!({"slug": "ok", "name": "Ok", "admin": true}),
        json!(["slug", "ok"]),
    ];
    for body in cases {
        admin.post("/v1/tenants", &body).await.problem(422);
    }
    for body in [
        json!({"status": "deleted"}),
        json!({"name": 5}),
        json!({"parent": 5}),
        json!({"slug": "renamed"}),
        json!({"name": ""}),
    ] {
        admin.patch("/v1/tenants/hsbc", &body).await.problem(422);
    }
    let direct = env.superuser().await;
    let count: i64 = direct.query_one("SELECT count(*) FROM pgtenant.tenants", &[]).await.unwrap().get(0);
    assert_eq!(count, 4, "nothing was created");
    assert_eq!(admin.get("/v1/tenants/hsbc").await.json()["name"], "HSBC Holdings");
}

#[tokio::test]
async fn malformed_requests_are_4xx_problems_never_5xx() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let auth = format!("Bearer {}", env.config.admin.token);
    let json_headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let send = |method: &'static str, path: &'static str, body: Vec<u8>| {
        let headers = json_headers;
        let addr = env.server.admin_addr;
        async move { request(addr, method, path, &headers, &body).await }
    };

    send("POST", "/v1/tenants", b"{\"slug\": ".to_vec()).await.problem(400);
    send("POST", "/v1/tenants", b"not json".to_vec()).await.problem(400);
    send("PATCH", "/v1/tenants/hsbc", b"{,}".to_vec()).await.problem(400);
    send("POST", "/v1/tenants/hsbc/logins", b"\xff\xfe".to_vec()).await.problem(400);
    send("PATCH", "/v1/logins/hk_teller", b"{\"enabled\": tru}".to_vec()).await.problem(400);

    // Too large: 64 KiB is the limit.
    let mut big = b"{\"slug\": \"big\", \"name\": \"".to_vec();
    big.extend(vec![b'n'; 70 * 1024]);
    big.extend_from_slice(b"\"}");
    send("POST", "/v1/tenants", big).await.problem(413);

    // Not declared as JSON.
    let reply = request(
        env.server.admin_addr,
        "POST",
        "/v1/tenants",
        &[("Authorization", auth.as_str())],
        br#"{"slug":"a","name":"b"}"#,
    )
    .await;
    reply.problem(415);

    // Wrong query parameters, path types and methods.
    admin.get("/v1/tenants?parnet=hsbc").await.problem(400);
    admin.delete("/v1/sessions/not-a-number").await.problem(400);
    admin.delete("/v1/sessions/99999999999").await.problem(400);
    admin.send("PUT", "/v1/tenants/hsbc", Some(&json!({}))).await.problem(405);
    admin.send("DELETE", "/v1/tenants", None).await.problem(405);
    admin.get("/v1/nothing-here").await.problem(404);
}

#[tokio::test]
async fn reparenting_into_a_cycle_is_409() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    create_tenant(&admin, json!({"slug": "hk-kowloon", "name": "Kowloon", "parent": "hsbc-hk"})).await;
    // Directly under itself, by slug and by id.
    admin.patch("/v1/tenants/hsbc", &json!({"parent": "hsbc"})).await.problem(409);
    admin.patch("/v1/tenants/hsbc", &json!({"parent": HSBC})).await.problem(409);
    // Under its child, and under its grandchild.
    admin.patch("/v1/tenants/hsbc", &json!({"parent": "hsbc-hk"})).await.problem(409);
    let detail = admin.patch(&format!("/v1/tenants/{HSBC}"), &json!({"parent": "hk-kowloon"})).await.problem(409);
    assert!(detail.contains("ancestor"), "{detail}");
    // Nothing moved; a legal move works.
    assert_eq!(admin.get("/v1/tenants/hsbc").await.json()["parent_id"], Value::Null);
    let moved = admin.patch("/v1/tenants/hk-kowloon", &json!({"parent": "hsbc"})).await.json();
    assert_eq!(moved["parent_id"], HSBC);
}

#[tokio::test]
async fn logins_are_managed_and_no_reply_carries_a_password() {
    let env = TestEnv::start().await;
    let admin = admin(&env);

    let reply =
        admin.post("/v1/tenants/hsbc-hk/logins", &json!({"username": "hk_clerk", "password": NEW_PASSWORD})).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    forbidden_words_absent(&reply);
    assert_eq!(reply.header("location"), Some("/v1/logins/hk_clerk"));
    let login = reply.json();
    let mut keys: Vec<&str> = login.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access", "created_at", "enabled", "service", "tenant_id", "username"]);
    assert_eq!(login["tenant_id"], HSBC_HK);
    assert_eq!(login["service"], false);
    assert_eq!(login["access"], "readwrite");
    assert_eq!(login["enabled"], true);

    // The new login connects and sees hsbc-hk's rows.
    let clerk = env.try_connect("hk_clerk", NEW_PASSWORD).await.expect("new login connects");
    assert_eq!(account_ids(&clerk).await, vec![3, 4]);
    drop(clerk);

    // Same password, fresh salt: two different verifiers.
    create_login(&admin, HSBC_HK, "hk_clerk2", "readonly").await;
    let direct = env.superuser().await;
    let verifiers: Vec<String> = direct
        .query("SELECT verifier FROM pgtenant.logins WHERE username IN ('hk_clerk', 'hk_clerk2')", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(verifiers.len(), 2);
    assert_ne!(verifiers[0], verifiers[1]);
    assert!(verifiers.iter().all(|v| v.starts_with("SCRAM-SHA-256$4096:")));

    // Errors.
    let detail = admin
        .post("/v1/tenants/hsbc/logins", &json!({"username": "hk_clerk", "password": NEW_PASSWORD}))
        .await
        .problem(409);
    assert!(detail.contains("hk_clerk"), "{detail}");
    admin.post("/v1/tenants/hsbc/logins", &json!({"username": "shorty", "password": "short-pw"})).await.problem(422);
    admin
        .post(
            "/v1/tenants/hsbc/logins",
            &json!({"username": "Robert'); DROP TABLE pgtenant.logins;--", "password": NEW_PASSWORD}),
        )
        .await
        .problem(422);
    admin
        .post("/v1/tenants/hsbc/logins", &json!({"username": "x", "password": NEW_PASSWORD, "access": "superuser"}))
        .await
        .problem(422);
    admin
        .post(
            "/v1/tenants/hsbc/logins",
            &json!({"username": "x", "password": NEW_PASSWORD, "verifier": "SCRAM-SHA-256$1:x"}),
        )
        .await
        .problem(422);
    admin.post("/v1/tenants/nobody/logins", &json!({"username": "x", "password": NEW_PASSWORD})).await.problem(404);

    // List, read.
    let listed = admin.get("/v1/tenants/hsbc-hk/logins").await;
    forbidden_words_absent(&listed);
    let names: Vec<String> =
        listed.json().as_array().unwrap().iter().map(|l| l["username"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["hk_clerk", "hk_clerk2", "hk_teller"]);
    admin.get("/v1/tenants/nobody/logins").await.problem(404);
    let read = admin.get("/v1/logins/hk_clerk2").await;
    forbidden_words_absent(&read);
    assert_eq!(read.json()["access"], "readonly");
    admin.get("/v1/logins/nobody").await.problem(404);

    // Change the password: the old one stops working, the new one works.
    let changed = admin.patch("/v1/logins/hk_teller", &json!({"password": NEW_PASSWORD})).await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    forbidden_words_absent(&changed);
    assert_eq!(sqlstate(&env.refused("hk_teller", PASSWORD).await), "28P01");
    env.try_connect("hk_teller", NEW_PASSWORD).await.expect("new password works");
    admin.patch("/v1/logins/hk_teller", &json!({"password": "too-short"})).await.problem(422);
    admin.patch("/v1/logins/hk_teller", &json!({"enabled": "no"})).await.problem(422);
    admin.patch("/v1/logins/hk_teller", &json!({"username": "renamed"})).await.problem(422);
    admin.patch("/v1/logins/nobody", &json!({"enabled": false})).await.problem(404);

    // Access: readonly sessions cannot write.
    let readonly = admin.patch("/v1/logins/hk_clerk", &json!({"access": "readonly"})).await.json();
    assert_eq!(readonly["access"], "readonly");
    let clerk = env.try_connect("hk_clerk", NEW_PASSWORD).await.unwrap();
    let err = clerk.simple_query("UPDATE accounts SET balance = 0 WHERE id = 3").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501");

    // Delete.
    assert_eq!(admin.delete("/v1/logins/hk_clerk2").await.status, 204);
    admin.get("/v1/logins/hk_clerk2").await.problem(404);
    admin.delete("/v1/logins/hk_clerk2").await.problem(404);
    assert_eq!(sqlstate(&env.refused("hk_clerk2", NEW_PASSWORD).await), "28P01");
}

#[tokio::test]
async fn a_tenant_tree_built_over_http_is_enforced_by_the_proxy() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let group = create_tenant(&admin, json!({"slug": "hsbc2", "name": "HSBC Two"})).await;
    let hk = create_tenant(&admin, json!({"slug": "hsbc2-hk", "name": "HSBC Two HK", "parent": "hsbc2"})).await;
    let london =
        create_tenant(&admin, json!({"slug": "hsbc2-london", "name": "HSBC Two London", "parent": group["id"]})).await;
    let barclays = create_tenant(&admin, json!({"slug": "barclays2", "name": "Barclays Two"})).await;
    create_login(&admin, "hsbc2", "hsbc2_admin", "readwrite").await;
    create_login(&admin, "hsbc2-hk", "hsbc2_hk", "readwrite").await;
    create_login(&admin, "hsbc2-london", "hsbc2_london", "readonly").await;
    create_login(&admin, "barclays2", "barclays2_ops", "readwrite").await;

    let direct = env.superuser().await;
    for (id, tenant) in [(201i64, &group), (202, &hk), (203, &london), (204, &barclays)] {
        direct
            .execute(
                "INSERT INTO accounts (id, tenant_id, iban, holder, currency) VALUES ($1::int8, $2::text::uuid, 'X' || $1::int8, 'Holder', 'GBP')",
                &[&id, &tenant["id"].as_str().unwrap()],
            )
            .await
            .unwrap();
    }
    let sees = |user: &'static str| {
        let env = &env;
        async move {
            let client = env.try_connect(user, NEW_PASSWORD).await.unwrap_or_else(|e| panic!("{user}: {e}"));
            account_ids(&client).await
        }
    };
    assert_eq!(sees("hsbc2_admin").await, vec![201, 202, 203]);
    assert_eq!(sees("hsbc2_hk").await, vec![202]);
    assert_eq!(sees("hsbc2_london").await, vec![203]);
    assert_eq!(sees("barclays2_ops").await, vec![204]);

    // A new row written by the child is visible to the parent, not to the sibling.
    let hk_client = env.try_connect("hsbc2_hk", NEW_PASSWORD).await.unwrap();
    hk_client
        .execute("INSERT INTO accounts (id, iban, holder, currency) VALUES (205, 'HK2', 'New Co', 'HKD')", &[])
        .await
        .unwrap();
    assert_eq!(sees("hsbc2_admin").await, vec![201, 202, 203, 205]);
    assert_eq!(sees("hsbc2_london").await, vec![203]);
    let london_client = env.try_connect("hsbc2_london", NEW_PASSWORD).await.unwrap();
    let err = london_client.simple_query("DELETE FROM accounts").await.unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "readonly through the API is readonly");
}

#[tokio::test]
async fn disabling_a_login_ends_its_sessions_and_refuses_new_ones() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let (_hk, hk_watch) = connect_watched(&env.url("hk_teller", PASSWORD)).await;
    let barclays = env.connect("barclays_ops").await;

    let reply = admin.patch("/v1/logins/hk_teller", &json!({"enabled": false})).await;
    assert_eq!(reply.json()["enabled"], false);
    let (code, message) = ended(hk_watch).await;
    assert_eq!(code, "57P01");
    assert!(message.contains("hk_teller") && message.contains("disabled"), "{message}");
    let refused = env.refused("hk_teller", PASSWORD).await;
    assert_eq!(sqlstate(&refused), "28000");
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "others go on");

    admin.patch("/v1/logins/hk_teller", &json!({"enabled": true})).await;
    env.connect("hk_teller").await;
}

#[tokio::test]
async fn suspending_a_tenant_ends_its_sessions_until_it_is_active_again() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let (_london, london_watch) = connect_watched(&env.url("london_auditor", PASSWORD)).await;
    let hsbc = env.connect("hsbc_admin").await;

    let suspended = admin.patch("/v1/tenants/hsbc-london", &json!({"status": "suspended"})).await.json();
    assert_eq!(suspended["status"], "suspended");
    let (code, message) = ended(london_watch).await;
    assert_eq!(code, "57P01");
    assert!(message.contains("hsbc-london") && message.contains("suspended"), "{message}");
    assert_eq!(sqlstate(&env.refused("london_auditor", PASSWORD).await), "28000");
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6], "the parent's session goes on");

    admin.patch("/v1/tenants/hsbc-london", &json!({"status": "active"})).await;
    env.connect("london_auditor").await;
}

#[tokio::test]
async fn deleting_a_login_or_a_tenant_ends_their_sessions() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let (_barclays, barclays_watch) = connect_watched(&env.url("barclays_ops", PASSWORD)).await;
    assert_eq!(admin.delete("/v1/logins/barclays_ops").await.status, 204);
    let (code, message) = ended(barclays_watch).await;
    assert_eq!(code, "57P01");
    assert!(message.contains("deleted"), "{message}");

    create_tenant(&admin, json!({"slug": "shortlived", "name": "Short Lived"})).await;
    create_login(&admin, "shortlived", "brief_user", "readwrite").await;
    let (_brief, brief_watch) = connect_watched(&env.url("brief_user", NEW_PASSWORD)).await;
    assert_eq!(admin.delete("/v1/tenants/shortlived").await.status, 204);
    let (code, _) = ended(brief_watch).await;
    assert_eq!(code, "57P01");
    admin.get("/v1/logins/brief_user").await.problem(404);
    assert_eq!(sqlstate(&env.refused("brief_user", NEW_PASSWORD).await), "28P01");
}

#[tokio::test]
async fn moving_a_tenant_changes_what_open_sessions_of_its_ancestors_see() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let (hsbc, hsbc_watch) = connect_watched(&env.url("hsbc_admin", PASSWORD)).await;
    let (_london, london_watch) = connect_watched(&env.url("london_auditor", PASSWORD)).await;
    let barclays = env.connect("barclays_ops").await;
    // hsbc-hk moves under barclays: hsbc's open session stops seeing it at its
    // next statement, barclays' starts (tests/integration/hierarchy.rs).
    assert_eq!(admin.patch("/v1/tenants/hsbc-hk", &json!({"parent": "barclays"})).await.status, 200);
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 5, 6]);
    assert_eq!(account_ids(&barclays).await, vec![3, 4, 7, 8, 9]);
    // A later change that does end a session: once it has, the re-check that
    // followed the move has run too, and it left hsbc's session alone.
    assert_eq!(admin.patch("/v1/logins/london_auditor", &json!({"enabled": false})).await.status, 200);
    assert_eq!(ended(london_watch).await.0, "57P01");
    assert!(!hsbc_watch.is_finished(), "hsbc's session goes on");
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 5, 6]);
}

#[tokio::test]
async fn sessions_are_listed_and_ended_and_pools_count_them() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let url = format!("{}?application_name=ledger-app", env.url("hk_teller", PASSWORD));
    let (_hk, hk_watch) = connect_watched(&url).await;
    let _london = env.connect("london_auditor").await;

    let listed = admin.get("/v1/sessions").await.json();
    let sessions = listed.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    let hk = sessions.iter().find(|s| s["username"] == "hk_teller").expect("hk session");
    let mut keys: Vec<&str> = hk.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["application_name", "client_addr", "connected_at", "id", "state", "subject", "tenant_id", "username"]
    );
    assert!(hk["subject"].is_null(), "a password login has no subject");
    assert_eq!(hk["tenant_id"], HSBC_HK);
    assert_eq!(hk["application_name"], "ledger-app");
    assert_eq!(hk["state"], "idle");
    assert!(hk["client_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(hk["connected_at"].as_str().unwrap().ends_with('Z'));

    let pools = admin.get("/v1/pools").await.json();
    let active =
        |access: &str| pools.as_array().unwrap().iter().find(|p| p["access"] == access).map(|p| p["active"].clone());
    assert_eq!(active("readwrite"), Some(json!(1)), "{pools}");
    assert_eq!(active("readonly"), Some(json!(1)), "{pools}");
    assert_eq!(pools[0]["mode"], "session");

    let id = hk["id"].as_i64().unwrap();
    assert_eq!(admin.delete(&format!("/v1/sessions/{id}")).await.status, 204);
    let (code, message) = ended(hk_watch).await;
    assert_eq!(code, "57P01");
    assert_eq!(message, "terminating connection due to administrator command");
    admin.delete("/v1/sessions/424242").await.problem(404);
    eventually("the ended session leaves the list", || async {
        admin.get("/v1/sessions").await.json().as_array().unwrap().len() == 1
    })
    .await;
}

#[tokio::test]
async fn metrics_and_openapi_describe_the_process_and_the_api() {
    let env = TestEnv::start().await;
    let admin = admin(&env);
    let _hk = env.connect("hk_teller").await;
    assert_eq!(sqlstate(&env.refused("hk_teller", "wrong-password").await), "28P01");
    admin.get("/v1/tenants").await;

    let reply = request(env.server.admin_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
    let text = reply.text();
    for name in [
        "pgtenant_client_connections",
        "pgtenant_sessions_started_total",
        "pgtenant_auth_failures_total",
        "pgtenant_connections_refused_total{sqlstate=\"28P01\"}",
        "pgtenant_sessions_open{access=\"readwrite\"}",
        "pgtenant_admin_requests_total{method=\"GET\",route=\"/v1/tenants\",status=\"200\"}",
        "# HELP pgtenant_auth_failures_total",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }

    let reply = request(env.server.admin_addr, "GET", "/openapi.json", &[], b"").await;
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // Client generators need every operationId, unique.
    let mut ids = Vec::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            ids.push(operation["operationId"].as_str().expect("an operationId").to_owned());
        }
    }
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "operationIds repeat: {ids:?}");
    // And a real validator accepts the document (openapi-spec-validator, installed by scripts/test).
    let mut validator = std::process::Command::new("python3")
        .args(["-c", "import json, sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin))"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    validator.stdin.take().unwrap().write_all(&reply.body).unwrap();
    let verdict = validator.wait_with_output().unwrap();
    assert!(verdict.status.success(), "{}", String::from_utf8_lossy(&verdict.stderr));
    let routes = [
        ("/v1/tenants", &["get", "post"][..]),
        ("/v1/tenants/{tenant}", &["get", "patch", "delete"]),
        ("/v1/tenants/{tenant}/logins", &["get", "post"]),
        ("/v1/logins/{username}", &["get", "patch", "delete"]),
        ("/v1/tenants/{tenant}/stats", &["get"]),
        ("/v1/sessions", &["get"]),
        ("/v1/sessions/{id}", &["delete"]),
        ("/v1/pools", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ];
    for (path, methods) in routes {
        for method in methods {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} missing");
            if path.starts_with("/v1/") {
                assert!(operation["responses"]["401"].is_object(), "{method} {path}: no 401");
                assert!(operation["security"].is_array(), "{method} {path}: no security");
            }
        }
    }
    assert_eq!(
        doc["paths"]["/v1/tenants"]["post"]["responses"]["409"]["content"]["application/problem+json"]["schema"]
            ["$ref"],
        "#/components/schemas/Problem"
    );
    for schema in [
        "Tenant",
        "TenantFigures",
        "Login",
        "Problem",
        "CreateTenant",
        "UpdateTenant",
        "CreateLogin",
        "UpdateLogin",
        "Session",
        "Pool",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
    assert!(doc["components"]["schemas"]["Login"]["properties"]["password"].is_null());
}

#[tokio::test]
async fn readyz_follows_the_catalog_and_a_lost_notification_is_caught_on_reconnect() {
    let env = TestEnv::start().await;
    let addr = env.server.admin_addr;
    let ready = || async move { request(addr, "GET", "/readyz", &[], b"").await.status };
    assert_eq!(ready().await, 200);

    // A change made without its notification (triggers off): nothing tells the process.
    let (hk, hk_watch) = connect_watched(&env.url("hk_teller", PASSWORD)).await;
    let direct = env.superuser().await;
    direct
        .batch_execute("SET session_replication_role = replica; UPDATE pgtenant.logins SET enabled = false WHERE username = 'hk_teller'; RESET session_replication_role;")
        .await
        .unwrap();
    assert_eq!(account_ids(&hk).await, vec![3, 4], "no notification, no re-check yet");

    // The control database goes away for this database, then comes back.
    let postgres = connect_url(&env.cluster.url(pgtenant::dev::cluster::SUPERUSER, "postgres")).await;
    let database = env.database.clone();
    postgres.batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false")).await.unwrap();
    postgres
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = 'pgtenant_owner'",
            &[&database],
        )
        .await
        .unwrap();
    eventually("readyz reports 503", || async { ready().await == 503 }).await;
    postgres.batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true")).await.unwrap();
    eventually("readyz reports 200 again", || async { ready().await == 200 }).await;

    // The listener's re-check after reconnecting ends the session.
    let (code, message) = ended(hk_watch).await;
    assert_eq!(code, "57P01");
    assert!(message.contains("disabled"), "{message}");
}

/// A `pgtenant serve` child process on the test's database.
struct ServeProcess {
    child: tokio::process::Child,
    proxy: std::net::SocketAddr,
    admin: Admin,
}

async fn spawn_serve(env: &TestEnv, token: &str) -> ServeProcess {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("PGTENANT_ADMIN__TOKEN", token)
        .env("PGTENANT_UPSTREAM__URL", env.config.upstream.url.clone())
        .env("PGTENANT_CONTROL__URL", env.config.control.url.clone())
        .env("PGTENANT_PROXY__LISTEN", "127.0.0.1:0")
        .env("PGTENANT_ADMIN__LISTEN", "127.0.0.1:0")
        .current_dir(std::env::temp_dir())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pgtenant serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let field = |line: &str, name: &str| -> Option<std::net::SocketAddr> {
        line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok())
    };
    let (proxy, admin) = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("pgtenant is listening") {
                return (field(&line, "proxy_addr"), field(&line, "admin_addr"));
            }
        }
        (None, None)
    })
    .await
    .expect("serve started in time");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    ServeProcess {
        child,
        proxy: proxy.expect("proxy_addr in the log"),
        admin: Admin::new(admin.expect("admin_addr in the log"), token),
    }
}

#[tokio::test]
async fn changes_through_one_process_reach_another() {
    let env = TestEnv::start().await;
    let token = "two-process-token-0123456789";
    let mut a = spawn_serve(&env, token).await;
    let mut b = spawn_serve(&env, token).await;
    let url = |process: &ServeProcess, user: &str| {
        format!("postgres://{user}:{NEW_PASSWORD}@{}/{}", process.proxy, env.database)
    };

    // Created through A, logs in through B.
    create_login(&a.admin, "hsbc-hk", "roaming_teller", "readwrite").await;
    let (via_b, _) = connect_watched(&url(&b, "roaming_teller")).await;
    assert_eq!(account_ids(&via_b).await, vec![3, 4]);

    // Disabled through B, cut off on A.
    let (_via_a, a_watch) = connect_watched(&url(&a, "roaming_teller")).await;
    let started = Instant::now();
    let reply = b.admin.patch("/v1/logins/roaming_teller", &json!({"enabled": false})).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (code, message) = ended(a_watch).await;
    let propagation = started.elapsed();
    assert_eq!(code, "57P01");
    assert!(message.contains("disabled"), "{message}");
    eprintln!("propagation B→A (PATCH sent → FATAL on A's client): {propagation:?}");

    // Suspended through A, cut off on B.
    let (_hk_b, hk_b_watch) =
        connect_watched(&format!("postgres://hk_teller:{PASSWORD}@{}/{}", b.proxy, env.database)).await;
    let started = Instant::now();
    a.admin.patch("/v1/tenants/hsbc-hk", &json!({"status": "suspended"})).await;
    let (code, _) = ended(hk_b_watch).await;
    eprintln!("propagation A→B (suspend → FATAL on B's client): {:?}", started.elapsed());
    assert_eq!(code, "57P01");

    let _ = a.child.start_kill();
    let _ = b.child.start_kill();
    let _ = a.child.wait().await;
    let _ = b.child.wait().await;
}

#[tokio::test]
async fn readyz_is_503_while_the_upstream_is_unreachable() {
    let nowhere = refusing_addr();
    let env = TestEnv::start_with(|config| {
        config.upstream.url = format!("postgres://pgtenant_app@{nowhere}/nowhere");
    })
    .await;
    let reply = request(env.server.admin_addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.text(), "upstream unreachable\nupstream default: unreachable\n");
    let reply = request(env.server.admin_addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(reply.status, 200, "alive, though not ready");
}

/// Every reply carries the request's id: the caller's `X-Request-Id` when it
/// is a plausible one, else a fresh random one (an id that could forge a log
/// line or flood it is replaced).
#[tokio::test]
async fn every_reply_names_its_request_id() {
    let env = TestEnv::start().await;
    let addr = env.server.admin_addr;
    let bearer = format!("Bearer {}", env.config.admin.token);
    let reply =
        request(addr, "GET", "/v1/tenants", &[("Authorization", &bearer), ("X-Request-Id", "lb-7f3a.42:9_x")], b"")
            .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-request-id"), Some("lb-7f3a.42:9_x"));

    let long = "a".repeat(65);
    let mut fresh = Vec::new();
    for (path, header) in [
        ("/healthz", None),
        ("/v1/tenants", None),
        ("/v1/no-such-route", Some("has space")),
        ("/healthz", Some(long.as_str())),
        ("/healthz", Some("quote\"d")),
        ("/healthz", Some("")),
    ] {
        let mut headers = vec![("Authorization", bearer.as_str())];
        if let Some(id) = header {
            headers.push(("X-Request-Id", id));
        }
        let reply = request(addr, "GET", path, &headers, b"").await;
        let id = reply.header("x-request-id").unwrap_or_else(|| panic!("{path} {header:?}: no id")).to_owned();
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{path} {header:?}: {id}");
        fresh.push(id);
    }
    fresh.sort();
    fresh.dedup();
    assert_eq!(fresh.len(), 6, "each request gets its own id");
    // Unauthenticated and refused requests get one too.
    let refused = request(addr, "GET", "/v1/tenants", &[], b"").await;
    refused.problem(401);
    assert!(refused.header("x-request-id").is_some());
}
