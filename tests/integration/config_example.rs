//! The shipped example config parses and names every key the code knows;
//! the Docker build installs what `scripts/lib/install.sh` installs to build.

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../config.toml.example");
    let config = pgtenant::config::Config::from_sources(text, &[]).expect("config.toml.example is valid");
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6432");
    assert_eq!(config.served_database(), "app");
}

/// The apt packages a Dockerfile stage's `apt-get install` lines name.
fn docker_stage_packages(dockerfile: &str, stage: &str) -> Vec<String> {
    let start = dockerfile.find(&format!("AS {stage}")).expect("the stage");
    let end = dockerfile[start..].find("\nFROM ").map_or(dockerfile.len(), |i| start + i);
    let stage_text = dockerfile[start..end].replace("\\\n", " ");
    stage_text
        .lines()
        .filter_map(|line| line.split("apt-get install").nth(1))
        .flat_map(|rest| {
            rest.split("&&").next().unwrap_or("").split_whitespace().map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|word| !word.starts_with('-'))
        .collect()
}

#[test]
fn the_docker_build_installs_what_ci_installs_to_build() {
    let dockerfile = include_str!("../../docker/Dockerfile");
    let ci = include_str!("../../scripts/lib/install.sh");
    let build = docker_stage_packages(dockerfile, "build");
    assert!(build.contains(&"libclang-dev".to_owned()), "pg_query needs libclang: {build:?}");
    for package in &build {
        assert!(ci.contains(&format!("missing+=({package})")), "scripts/lib/install.sh does not install {package}");
    }
}
