//! The container and release files, read as text (no Docker here): what the image build
//! needs to stay small, run as non-root, and take any subcommand.

use std::path::Path;

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The instructions of the Dockerfile's last stage, without comments.
fn runtime_stage() -> Vec<String> {
    let dockerfile = read("Dockerfile");
    let last = dockerfile.rsplit("\nFROM ").next().unwrap();
    last.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_build_context_leaves_out_build_output() {
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for needed in ["target/", ".git/", "sandbox-out/"] {
        assert!(lines.contains(&needed), ".dockerignore lacks {needed}");
    }
}

#[test]
fn the_image_runs_any_subcommand_as_a_non_root_user_in_a_writable_directory() {
    let stage = runtime_stage();
    let find = |prefix: &str| {
        stage
            .iter()
            .rfind(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the runtime stage: {stage:#?}"))
            .clone()
    };
    assert_eq!(find("ENTRYPOINT"), r#"ENTRYPOINT ["connect-payg"]"#);
    assert_eq!(find("CMD"), r#"CMD ["run"]"#, "run stays the default");
    let user = find("USER");
    assert!(!user.ends_with(" root") && !user.ends_with(" 0"), "{user}");
    let uid = user.trim_start_matches("USER ").to_string();
    let workdir = find("WORKDIR").trim_start_matches("WORKDIR ").to_string();
    let text = stage.join("\n");
    assert!(
        text.contains(&format!("chown {uid}:{uid} {workdir}"))
            || text.contains(&format!("chown {uid} {workdir}")),
        "WORKDIR {workdir} is not made writable by {uid}:\n{text}"
    );
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"),
        "the binary is stripped"
    );
}

#[test]
fn the_image_checks_its_health_with_the_health_command() {
    let stage = runtime_stage();
    let healthcheck = stage
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK "))
        .unwrap_or_else(|| panic!("no HEALTHCHECK in the runtime stage: {stage:#?}"));
    let (options, command) = healthcheck
        .trim_start_matches("HEALTHCHECK ")
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD […]");
    // The exec form: no shell (and no curl) in the image is needed.
    let command: Vec<String> = serde_json::from_str(command).expect("CMD in exec form");
    assert_eq!(command, ["connect-payg", "health"]);
    // Options (interval, timeout, start period) are written `--name=value`.
    for option in options.split_whitespace() {
        assert!(option.starts_with("--") && option.contains('='), "{option}");
    }
    // The command has something to ask: METRICS_ADDRESS is set in the image, its port exposed.
    let address = stage
        .iter()
        .find_map(|l| l.strip_prefix("ENV METRICS_ADDRESS="))
        .expect("ENV METRICS_ADDRESS in the runtime stage");
    let address = connect_payg::config::parse_metrics_address(address).unwrap();
    assert!(
        address.ip().is_unspecified(),
        "reachable from outside the container"
    );
    assert!(
        stage.contains(&format!("EXPOSE {}", address.port())),
        "{stage:#?}"
    );
}

#[test]
fn the_changelog_the_extension_points_to_exists_and_names_this_version() {
    let extension: serde_json::Value = serde_json::from_str(&read("extension.json")).unwrap();
    let url = extension["changelog_url"].as_str().unwrap();
    let file = url.rsplit('/').next().unwrap();
    assert_eq!(file, "CHANGELOG.md", "{url}");
    let changelog = read(file);
    let version = extension["version"].as_str().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert!(
        changelog.contains(&format!("\n## {version}")),
        "CHANGELOG.md has no section for {version}"
    );
}
