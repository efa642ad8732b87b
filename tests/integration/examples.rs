//! The app developers' examples, run as written against `pgtenant dev`.

use std::process::Command;

use crate::cli::{start_dev, stop_dev};

/// The value after `label` on the banner line that has it, up to `end`.
fn banner_value(lines: &[String], label: &str, end: char) -> String {
    lines
        .iter()
        .find_map(|line| line.split(label).nth(1))
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_else(|| panic!("no {label:?} in the banner: {lines:?}"))
        .trim()
        .to_owned()
}

/// examples/fastapi_tenants: a FastAPI + SQLAlchemy app whose pooled engine
/// is a service login and whose requests assume the caller's tenant; two
/// organisations' users call it concurrently (its own test script).
#[tokio::test]
async fn the_fastapi_example_serves_each_organisation_its_rows() {
    let (child, lines) = start_dev().await;
    let proxy = banner_value(&lines, "proxy   postgres://", ' ');
    let admin = banner_value(&lines, "admin   ", ' ');
    let admin_token = banner_value(&lines, "(token: ", ')');
    let secret = banner_value(&lines, "HS256, secret ", ',');
    let issuer = banner_value(&lines, ", iss ", ',');
    let audience = banner_value(&lines, ", aud ", ',');
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/fastapi_tenants/test_app.py");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("PGTENANT_PROXY", proxy)
            .env("PGTENANT_ADMIN", admin)
            .env("PGTENANT_ADMIN_TOKEN", admin_token)
            .env("JWT_SECRET", secret)
            .env("JWT_ISSUER", issuer)
            .env("JWT_AUDIENCE", audience)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stopped = stop_dev(child).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("each saw only its rows"), "{stdout}");
    assert!(stopped);
}
