//! psql, the client analysts use, through the proxy.

use crate::common::*;

#[tokio::test]
async fn psql_sees_the_tenant_tree() {
    let env = TestEnv::start().await;
    let (ok, out, err) =
        psql(&env.url("hsbc_admin", PASSWORD), &["-c", "SELECT holder FROM accounts ORDER BY id"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "HSBC Group Treasury\nHSBC Group Payroll\nKowloon Trading Ltd\nWan Chai Noodles\nCanary Wharf Capital\nSoho Coffee Roasters\n"
    );
    let (ok, out, err) =
        psql(&env.url("barclays_ops", PASSWORD), &["-c", "SELECT holder FROM accounts ORDER BY id"]).await;
    assert!(ok, "{err}");
    assert_eq!(out, "Barclays Treasury\nManchester Motors\nLeeds Textiles\n");
}

#[tokio::test]
async fn psql_script_with_copy_and_an_error() {
    let env = TestEnv::start().await;
    let dir = std::env::temp_dir().join(format!("pgtenant-psql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("script.sql");
    std::fs::write(&file, "\\copy (SELECT id FROM accounts ORDER BY id) TO STDOUT\nSELECT 1/0;\n").unwrap();
    let (ok, out, err) = psql(&env.url("hk_teller", PASSWORD), &["-f", file.to_str().unwrap()]).await;
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok, "the script stops at the error");
    assert_eq!(out, "3\n4\n");
    assert!(err.contains("ERROR:  division by zero"), "{err}");
}

#[tokio::test]
async fn psql_wrong_password_message() {
    let env = TestEnv::start().await;
    let (ok, _, err) = psql(&env.url("hsbc_admin", "wrong-password"), &["-c", "SELECT 1"]).await;
    assert!(!ok);
    assert!(err.contains("FATAL:  password authentication failed for user \"hsbc_admin\""), "{err}");
}
