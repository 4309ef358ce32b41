//! The request of an SMS attempt, from the settings of this moment and the stored recipient
//! and text.
//!
//! - `twilio`: `POST {SMS_TWILIO_BASE_URL}/2010-04-01/Accounts/{SID}/Messages.json`, basic auth
//!   `SID:SMS_TWILIO_AUTH_TOKEN`, form fields `To`, `From` (`SMS_FROM`) and/or
//!   `MessagingServiceSid`, `Body`.
//! - `http`: `SMS_HTTP_METHOD SMS_HTTP_URL` with `SMS_HTTP_HEADERS` and `SMS_HTTP_BODY`, whose
//!   `{to}` and `{text}` are escaped by `SMS_HTTP_BODY_ENCODING` (`json`: JSON string escaping,
//!   the template has the quotes; `form`: URL form encoding; `raw`: as is). A `content-type` by
//!   the encoding is added unless `SMS_HTTP_HEADERS` has one.
//! - `file`: a request to the `file://` URL of `SMS_DIR/<delivery id>.txt` whose body is the
//!   file; the engine writes it ([`super::file`]) instead of calling the egress client, which
//!   only speaks http(s) (the SSRF guard is untouched).
//!
//! HTTP requests go through the guarded egress client like every other call.

use std::{path::PathBuf, time::Duration};

use base64::Engine as _;
use url::form_urlencoded;
use uuid::Uuid;

use super::StoredSms;
use crate::{
    egress::{self, AttemptResult, OutboundRequest},
    entity::delivery,
    settings::{Settings, SmsBodyEncoding, SmsGateway},
};

/// The Twilio Messages API path under the base URL.
fn twilio_url(settings: &Settings) -> String {
    format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        settings.sms_twilio_base_url.trim_end_matches('/'),
        settings
            .sms_twilio_account_sid
            .as_deref()
            .unwrap_or_default()
    )
}

/// The file the `file` gateway writes for delivery `id`: `SMS_DIR/<id>.txt`, absolute.
pub(crate) fn file_path(settings: &Settings, id: Uuid) -> PathBuf {
    let path = settings.sms_dir.join(format!("{id}.txt"));
    std::path::absolute(&path).unwrap_or(path)
}

fn file_url(settings: &Settings, id: Uuid) -> String {
    let path = file_path(settings, id);
    url::Url::from_file_path(&path)
        .map_or_else(|()| format!("file:{}", path.display()), String::from)
}

/// Where delivery `id` is headed with the current settings (stored in its `url`; redacted).
pub(crate) fn destination(settings: &Settings, id: Uuid) -> String {
    match settings.sms_gateway {
        SmsGateway::File => file_url(settings, id),
        SmsGateway::Twilio => twilio_url(settings),
        SmsGateway::Http => egress::redact_url(
            settings
                .sms_http_url
                .as_ref()
                .map(|url| url.expose())
                .unwrap_or_default(),
        ),
    }
}

/// The method of the current gateway (`PUT` for a file).
pub(crate) fn method(settings: &Settings) -> &str {
    match settings.sms_gateway {
        SmsGateway::File => "PUT",
        SmsGateway::Twilio => "POST",
        SmsGateway::Http => &settings.sms_http_method,
    }
}

/// The request of the next attempt of `delivery` (kind `sms`), or `None` when its stored body
/// is missing or does not parse.
pub(crate) fn request(
    settings: &Settings,
    delivery: &delivery::Model,
    timeout: Duration,
    traceparent: String,
) -> Option<OutboundRequest> {
    let sms = StoredSms::of(delivery)?;
    let trace = (common::trace::headers::TRACEPARENT.to_owned(), traceparent);
    let (url, headers, body) = match settings.sms_gateway {
        SmsGateway::File => (
            file_url(settings, delivery.id),
            Vec::new(),
            format!("To: {}\n\n{}\n", sms.to, sms.text),
        ),
        SmsGateway::Twilio => twilio(settings, &sms),
        SmsGateway::Http => http(settings, &sms),
    };
    let mut headers = headers;
    headers.push(trace);
    Some(OutboundRequest {
        url,
        method: method(settings).to_owned(),
        headers,
        body: body.into_bytes(),
        timeout,
    })
}

type Parts = (String, Vec<(String, String)>, String);

fn twilio(settings: &Settings, sms: &StoredSms) -> Parts {
    let sid = settings
        .sms_twilio_account_sid
        .as_deref()
        .unwrap_or_default();
    let token = settings
        .sms_twilio_auth_token
        .as_ref()
        .map(|t| t.0.as_str())
        .unwrap_or_default();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}"));
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("To", &sms.to);
    if let Some(from) = &settings.sms_from {
        form.append_pair("From", from);
    }
    if let Some(service) = &settings.sms_twilio_messaging_service_sid {
        form.append_pair("MessagingServiceSid", service);
    }
    form.append_pair("Body", &sms.text);
    let headers = vec![
        ("authorization".to_owned(), format!("Basic {credentials}")),
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    (twilio_url(settings), headers, form.finish())
}

fn http(settings: &Settings, sms: &StoredSms) -> Parts {
    let encoding = settings.sms_http_body_encoding;
    let body = super::template::render(
        &settings.sms_http_body,
        &[("to", &sms.to), ("text", &sms.text)],
        |value| encode(encoding, value),
    );
    let mut headers = settings.sms_http_headers.0.clone();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        let content_type = match encoding {
            SmsBodyEncoding::Json => "application/json",
            SmsBodyEncoding::Form => "application/x-www-form-urlencoded",
            SmsBodyEncoding::Raw => "text/plain; charset=utf-8",
        };
        headers.push(("content-type".to_owned(), content_type.to_owned()));
    }
    let url = settings
        .sms_http_url
        .as_ref()
        .map(|url| url.expose().to_owned())
        .unwrap_or_default();
    (url, headers, body)
}

/// `value` escaped for a body of `encoding`.
fn encode(encoding: SmsBodyEncoding, value: &str) -> String {
    match encoding {
        SmsBodyEncoding::Json => {
            let quoted = serde_json::Value::from(value).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        SmsBodyEncoding::Form => form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        SmsBodyEncoding::Raw => value.to_owned(),
    }
}

/// Removes the text and the code of `delivery` (kind `sms`) from what the gateway answered,
/// before it is stored as the attempt's response (Twilio echoes the `body`).
pub(crate) fn scrub(delivery: &delivery::Model, result: &mut AttemptResult) {
    if delivery.kind != delivery::kind::SMS || result.response_body.is_empty() {
        return;
    }
    let Some(sms) = StoredSms::of(delivery) else {
        return;
    };
    let escaped = encode(SmsBodyEncoding::Json, &sms.text);
    // The text and the code, and the number (a gateway echoes `to`: personal data kept no
    // longer than the attempt log's retention otherwise).
    let digits = sms.to.trim_start_matches('+');
    for secret in [
        sms.text.as_str(),
        escaped.as_str(),
        sms.code.as_str(),
        sms.to.as_str(),
        digits,
    ] {
        if !secret.is_empty() {
            result.response_body = result.response_body.replace(secret, "***");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{SmsHeaders, SmsSecret};

    fn stored() -> StoredSms {
        StoredSms {
            to: "+447700900123".into(),
            text: "Signup: your \"code\" is 482913 & more".into(),
            code: "482913".into(),
        }
    }

    #[test]
    fn twilio_is_a_basic_auth_form_post() {
        let settings = Settings {
            sms_gateway: SmsGateway::Twilio,
            sms_twilio_base_url: "http://127.0.0.1:9/".into(),
            sms_twilio_account_sid: Some("AC123".into()),
            sms_twilio_auth_token: Some(SmsSecret("tok".into())),
            sms_from: Some("+15005550006".into()),
            ..Settings::default()
        };
        let (url, headers, body) = twilio(&settings, &stored());
        assert_eq!(
            url,
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(headers[0].1, "Basic QUMxMjM6dG9r");
        let fields: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            fields,
            vec![
                pair("To", "+447700900123"),
                pair("From", "+15005550006"),
                pair("Body", &stored().text)
            ]
        );
    }

    #[test]
    fn http_bodies_escape_by_their_encoding() {
        let base = Settings {
            sms_gateway: SmsGateway::Http,
            sms_http_url: Some("http://127.0.0.1:9/send".into()),
            sms_http_headers: SmsHeaders::parse("Authorization: Bearer x").expect("headers"),
            ..Settings::default()
        };
        let (_, headers, body) = http(&base, &stored());
        let json: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(json["text"], stored().text);
        assert_eq!(json["to"], "+447700900123");
        assert!(headers.contains(&("content-type".into(), "application/json".into())));
        let form = Settings {
            sms_http_body: "to={to}&msg={text}".into(),
            sms_http_body_encoding: SmsBodyEncoding::Form,
            ..base.clone()
        };
        let (_, _, body) = http(&form, &stored());
        assert_eq!(
            body,
            "to=%2B447700900123&msg=Signup%3A+your+%22code%22+is+482913+%26+more"
        );
        let raw = Settings {
            sms_http_body: "{to} {text}".into(),
            sms_http_body_encoding: SmsBodyEncoding::Raw,
            ..base
        };
        assert_eq!(
            http(&raw, &stored()).2,
            format!("+447700900123 {}", stored().text)
        );
    }
}
