//! `.env.template` lists every variable the services read.

use std::collections::BTreeSet;

fn variables_of<T: serde::Serialize>(settings: &T) -> BTreeSet<String> {
    serde_json::to_value(settings)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .map(|key| key.to_uppercase())
        .collect()
}

#[test]
fn every_setting_of_every_service_is_in_the_env_template() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.template"))
        .expect(".env.template at the workspace root");
    let mut variables = BTreeSet::new();
    variables.extend(variables_of(&user_service::Settings::default()));
    variables.extend(variables_of(&outbox_relay::Settings::default()));
    variables.extend(variables_of(&email_service::Settings::default()));
    variables.extend(variables_of(&signup_outbox::RunnerSettings::default()));
    variables.extend([
        "RUST_LOG".to_owned(),
        common::settings::CONFIG_FILE_VAR.to_owned(),
    ]);
    assert!(variables.len() > 40, "{variables:?}");
    let missing: Vec<&String> = variables
        .iter()
        .filter(|var| {
            !template.lines().any(|line| {
                line.trim_start_matches("# ")
                    .starts_with(&format!("{var}="))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing from .env.template: {missing:?}"
    );
}

#[test]
fn docker_compose_passes_every_setting_and_only_real_ones() {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
            .unwrap();
    let mut known = BTreeSet::new();
    known.extend(variables_of(&user_service::Settings::default()));
    known.extend(variables_of(&outbox_relay::Settings::default()));
    known.extend(variables_of(&email_service::Settings::default()));
    known.extend([
        "RUST_LOG".to_owned(),
        common::settings::CONFIG_FILE_VAR.to_owned(),
    ]);
    // Every upper-case key (`  RELAY_BATCH_SIZE: ${…}`, `      DATABASE_URL: postgres://…`) is
    // a variable handed to a container.
    let mut passed = BTreeSet::new();
    for line in compose.lines() {
        let Some((name, _)) = line.trim().split_once(':') else {
            continue;
        };
        let is_variable = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !is_variable {
            continue;
        }
        let is_service_setting = known.contains(name);
        let is_infrastructure = name.starts_with("POSTGRES_");
        assert!(
            is_service_setting || is_infrastructure,
            "docker-compose sets unknown {name}"
        );
        passed.insert(name.to_owned());
    }
    // And the other way round: a setting a user puts in .env reaches the containers.
    let not_passed: Vec<&String> = known.difference(&passed).collect();
    assert!(
        not_passed.is_empty(),
        "settings docker-compose does not pass to the services: {not_passed:?}"
    );
}
