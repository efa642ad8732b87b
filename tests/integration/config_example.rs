//! The shipped example config parses and names every key the code knows.

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config.toml.example");
    let config = pgtenant::config::Config::from_sources(text, &[]).expect("config.toml.example is valid");
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(config.served_database(), "app");
}
