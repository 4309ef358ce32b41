//! `.env.template` lists every variable the services read; `docker-compose.yml` passes them all,
//! and takes every password from `.env`.

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
    variables.extend(variables_of(&webhook_service::Settings::default()));
    variables.extend(variables_of(&signup_outbox::RunnerSettings::default()));
    variables.extend([
        "RUST_LOG".to_owned(),
        common::settings::CONFIG_FILE_VAR.to_owned(),
    ]);
    assert!(variables.len() > 40, "{variables:?}");
    assert!(variables.contains("WEBHOOK_ALLOWED_NETS"), "{variables:?}");
    assert!(variables.contains("WEBHOOK_HTTP_ADDR"), "{variables:?}");
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
    known.extend(variables_of(&webhook_service::Settings::default()));
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
        // PostgreSQL's, RabbitMQ's and Grafana's own settings.
        let is_infrastructure = name.starts_with("POSTGRES_")
            || name.starts_with("RABBITMQ_")
            || name.starts_with("GF_");
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

fn compose() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml")).unwrap()
}

/// The `NAME`s of every `${NAME:?…}` (required) substitution in `text`.
fn required_variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once(":?").map(|(name, _)| name))
        .filter(|name| name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn docker_compose_takes_every_password_from_env_and_publishes_only_the_api() {
    let compose = compose();
    for line in compose.lines().map(str::trim) {
        // A password as a setting: `POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?…}`, or under
        // the image's own name, `GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?…}`.
        if let Some((name, value)) = line.split_once(':')
            && name.ends_with("PASSWORD")
        {
            let required_from_env = value
                .trim()
                .strip_prefix("${")
                .and_then(|rest| rest.split_once(":?"))
                .is_some_and(|(variable, _)| variable.ends_with("PASSWORD"));
            assert!(
                required_from_env,
                "{name} must be required from .env: {line}"
            );
        }
        // A password in a URL: `scheme://user:${…:?…}@host`.
        for (_, rest) in line.match_indices("://").map(|(i, _)| line.split_at(i + 3)) {
            let Some((userinfo, _)) = rest.split_once('@') else {
                continue;
            };
            if let Some((_, password)) = userinfo.split_once(':') {
                assert!(
                    password.starts_with("${") && password.contains(":?"),
                    "literal password in docker-compose.yml: {line}"
                );
            }
        }
        // Published ports: the API on every interface, anything else on loopback only.
        if let Some(ports) = line.strip_prefix("ports:") {
            for port in ports.trim_matches([' ', '[', ']']).split(',') {
                let port = port.trim().trim_matches('"');
                assert!(
                    port == "8080:8080" || port.starts_with("127.0.0.1:"),
                    "docker-compose.yml publishes {port} beyond this machine"
                );
            }
        }
    }
    assert_eq!(
        compose.matches("ports:").count(),
        5,
        "API, mail UI, RabbitMQ UI, Prometheus and Grafana only"
    );

    // scripts/init-env.sh generates exactly the passwords compose requires, and .env.template
    // documents each of them.
    let required = required_variables(&compose);
    assert!(required.len() >= 7, "{required:?}");
    let init_env =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/init-env.sh"))
            .unwrap();
    let generated: BTreeSet<String> = init_env
        .split_once("secrets=(")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    assert_eq!(
        generated, required,
        "scripts/init-env.sh vs docker-compose.yml"
    );
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.template")).unwrap();
    for name in &required {
        assert!(
            template
                .lines()
                .any(|l| l.starts_with(&format!("# {name}="))),
            "{name} missing from .env.template"
        );
    }
}
