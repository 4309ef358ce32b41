//! Our Standard Webhooks signatures, checked by an implementation we did not write: the
//! reference Python library (`pip install standardwebhooks`, see
//! `scripts/install-test-tools.sh`), run as a subprocess.
//!
//! Without the package the test is skipped with a loud message, unless `REQUIRE_INTEROP` is set
//! (CI), which turns the absence into a failure.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use webhook_service::signing::{self, DEFAULT_TOLERANCE, Secret};

/// Reads a JSON list of cases on stdin, prints one verdict per case: `"ok"`, `"rejected: …"`
/// (a `WebhookVerificationError`) or `"crashed: …"` (any other exception, never a pass).
const VERIFIER: &str = r#"
import base64, json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

verdicts = []
for case in json.load(sys.stdin):
    body = base64.b64decode(case["body"])
    try:
        Webhook(case["secret"]).verify(body, case["headers"], json_parse=False)
        verdicts.append("ok")
    except WebhookVerificationError as error:
        verdicts.append(f"rejected: {error}")
    except Exception as error:
        verdicts.append(f"crashed: {type(error).__name__}: {error}")
json.dump(verdicts, sys.stdout)
"#;

/// One webhook as sent, the secret the receiver verifies with, and the verdict expected.
struct Case {
    name: &'static str,
    secret: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    accepted: bool,
}

fn python_has_standardwebhooks() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn python_verdicts(cases: &[Case]) -> Vec<String> {
    let input = serde_json::Value::Array(
        cases
            .iter()
            .map(|case| {
                serde_json::json!({
                    "secret": case.secret,
                    "body": STANDARD.encode(&case.body),
                    "headers": case
                        .headers
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), value.clone().into()))
                        .collect::<serde_json::Map<String, serde_json::Value>>(),
                })
            })
            .collect(),
    );
    let mut child = Command::new("python3")
        .args(["-c", VERIFIER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.to_string().as_bytes())
        .expect("cases written");
    let output = child.wait_with_output().expect("python3 finishes");
    assert!(
        output.status.success(),
        "the verifier failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON list of verdicts")
}

fn signed(
    name: &'static str,
    signers: &[&Secret],
    verifier: &Secret,
    timestamp: i64,
    body: &[u8],
    accepted: bool,
) -> Case {
    Case {
        name,
        secret: verifier.to_text(),
        headers: signing::headers(signers, "msg_2QJQpXY0aBmN3pJ8dTz", timestamp, body).to_vec(),
        body: body.to_vec(),
        accepted,
    }
}

fn cases(now: i64) -> Vec<Case> {
    let current = Secret::generate();
    let previous = Secret::generate();
    let json = br#"{"type":"user.registered","data":{"user_id":"0192b1c4"}}"#;
    let unicode = "{\"name\":\"Zoë Ångström 日本語 🎉\",\"note\":\"\\u00e9 é\"}".as_bytes();

    let mut truncated = signed("truncated", &[&current], &current, now, json, false);
    truncated.headers[2].1.pop();
    let mut tampered = signed("tampered body", &[&current], &current, now, json, false);
    tampered.body.push(b' ');

    vec![
        signed("json body", &[&current], &current, now, json, true),
        signed("unicode body", &[&current], &current, now, unicode, true),
        signed("empty body", &[&current], &current, now, b"", true),
        signed(
            "not UTF-8",
            &[&current],
            &current,
            now,
            &[0xff, 0xfe, 0],
            true,
        ),
        signed(
            "rotation, new secret",
            &[&current, &previous],
            &current,
            now,
            json,
            true,
        ),
        signed(
            "rotation, old secret",
            &[&current, &previous],
            &previous,
            now,
            json,
            true,
        ),
        signed("wrong secret", &[&previous], &current, now, json, false),
        truncated,
        tampered,
        signed(
            "10 minutes old",
            &[&current],
            &current,
            now - 600,
            json,
            false,
        ),
        signed(
            "10 minutes ahead",
            &[&current],
            &current,
            now + 600,
            json,
            false,
        ),
    ]
}

#[test]
fn the_reference_python_verifier_accepts_our_signatures_and_rejects_bad_ones() {
    if !python_has_standardwebhooks() {
        assert!(
            std::env::var_os("REQUIRE_INTEROP").is_none(),
            "REQUIRE_INTEROP is set but `python3 -c 'import standardwebhooks'` fails: run \
             scripts/install-test-tools.sh"
        );
        eprintln!(
            "\n!!! SKIPPED the Standard Webhooks interop test: the Python package \
             `standardwebhooks` is not installed (run scripts/install-test-tools.sh) !!!\n"
        );
        return;
    }
    let now = chrono::Utc::now().timestamp();
    let cases = cases(now);
    let verdicts = python_verdicts(&cases);
    assert_eq!(verdicts.len(), cases.len());

    for (case, verdict) in cases.iter().zip(&verdicts) {
        if case.accepted {
            assert_eq!(
                verdict, "ok",
                "{}: the reference verifier refused",
                case.name
            );
        } else {
            assert!(
                verdict.starts_with("rejected: "),
                "{}: expected a verification error, got {verdict}",
                case.name
            );
        }
        // Our own verifier agrees with the reference one on every case.
        let secret = Secret::parse(&case.secret).expect("own secret");
        let headers: http::HeaderMap = case
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_str(value).expect("header value"),
                )
            })
            .collect();
        let ours = signing::verify(&[&secret], &headers, &case.body, now, DEFAULT_TOLERANCE);
        assert_eq!(
            ours.is_ok(),
            case.accepted,
            "{}: ours said {ours:?}",
            case.name
        );
    }
}
