//! The hosted pages: they render with their security headers, the forms work through the same
//! logic as the JSON API, errors keep what was typed (never the password), and cross-site form
//! posts are refused.

use reqwest::{Response, header};

use crate::helpers::{TestApp, spawn_app};

const PASSWORD: &str = "correct horse battery";

/// A client that does not follow redirects, so the 303s can be checked.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_form(
    app: &TestApp,
    path: &str,
    fields: &[(&str, &str)],
    origin: Option<&str>,
) -> Response {
    let mut request = browser().post(app.url(path)).form(fields);
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.send().await.unwrap()
}

fn same_origin(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

fn assert_page_headers(response: &Response) {
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn the_pages_and_the_stylesheet_render_with_their_headers() {
    let app = spawn_app("pages_render").await;
    for path in [
        "/signup",
        "/signup/check?email=ann%40example.com",
        "/signup/verified",
        "/signup/already-verified",
        "/user/verify?token=nope",
    ] {
        let page = app.get(path).await;
        assert_page_headers(&page);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<link rel=\"stylesheet\" href=\"/assets/style.css\">"),
            "{path}: {html}"
        );
        assert!(!html.contains("<script"), "{path}");
    }
    let signup = app.get("/signup").await.text().await.unwrap();
    for label in [
        "<label for=\"email\">",
        "<label for=\"password\">",
        "<label for=\"first_name\">",
        "<label for=\"last_name\">",
        "<label for=\"phone\">",
    ] {
        assert!(signup.contains(label), "{label}: {signup}");
    }
    let check = app
        .get("/signup/check?email=ann%40example.com")
        .await
        .text()
        .await
        .unwrap();
    assert!(check.contains("ann@example.com"), "{check}");
    assert!(
        check.contains("action=\"/signup/code\"") && check.contains("action=\"/signup/resend\"")
    );

    let css = app.get("/assets/style.css").await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        css.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
}

#[tokio::test]
async fn the_sign_up_form_registers_and_redirects_to_the_check_page_where_the_code_verifies() {
    let app = spawn_app("pages_signup").await;
    let fields = [
        ("email", "Ann@Example.com"),
        ("password", PASSWORD),
        ("first_name", "Ann"),
        ("last_name", ""),
        ("phone", ""),
    ];
    let created = post_form(&app, "/signup", &fields, Some(&same_origin(&app))).await;
    assert_eq!(created.status(), 303);
    assert_eq!(
        created.headers()["location"],
        "/signup/check?email=ann%40example%2Ecom"
    );
    assert_eq!(app.events("UserRegisteredV1").await.len(), 1);

    let (_, code) = app.latest_secrets().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = post_form(
        &app,
        "/signup/code",
        &[("email", "ann@example.com"), ("code", wrong)],
        None,
    )
    .await;
    assert_eq!(refused.status(), 400);
    let html = refused.text().await.unwrap();
    assert!(html.contains("not correct or no longer valid"), "{html}");
    assert!(html.contains("aria-invalid=\"true\""), "{html}");

    let resent = post_form(
        &app,
        "/signup/resend",
        &[("email", "ann@example.com")],
        None,
    )
    .await;
    assert_eq!(resent.status(), 303);
    assert_eq!(
        resent.headers()["location"],
        "/signup/check?email=ann%40example%2Ecom&resent=1"
    );
    assert_eq!(app.events("VerificationResentV1").await.len(), 1);

    let (_, code) = app.latest_secrets().await;
    let verified = post_form(
        &app,
        "/signup/code",
        &[("email", "ann@example.com"), ("code", &code)],
        None,
    )
    .await;
    assert_eq!(verified.status(), 303);
    assert_eq!(verified.headers()["location"], "/signup/verified");
    assert_eq!(app.events("UserVerifiedV1").await.len(), 1);
}

#[tokio::test]
async fn errors_are_shown_inline_with_what_was_typed_but_never_the_password() {
    let app = spawn_app("pages_errors").await;
    let weak = post_form(
        &app,
        "/signup",
        &[
            ("email", "ann@example.com"),
            ("password", "short1"),
            ("first_name", "Ann"),
            ("last_name", "O'Hara"),
            ("phone", "+447400123456"),
        ],
        None,
    )
    .await;
    assert_eq!(weak.status(), 422);
    let html = weak.text().await.unwrap();
    assert!(
        html.contains("Password must be between 8 and 128 characters"),
        "{html}"
    );
    assert!(html.contains("value=\"ann@example.com\""), "{html}");
    assert!(html.contains("value=\"O&#x27;Hara\""), "escaped: {html}");
    assert!(html.contains("value=\"+447400123456\""), "{html}");
    assert!(
        !html.contains("short1"),
        "the password is never shown again"
    );
    assert_eq!(app.count("users").await, 0);

    let fields = [
        ("email", "ann@example.com"),
        ("password", PASSWORD),
        ("first_name", "<b>Ann</b>"),
        ("last_name", ""),
        ("phone", ""),
    ];
    let bad_name = post_form(&app, "/signup", &fields, None).await;
    assert_eq!(bad_name.status(), 422);
    let html = bad_name.text().await.unwrap();
    assert!(!html.contains("<b>Ann"), "auto-escaped: {html}");
    assert!(!html.contains(PASSWORD));

    let fields = [
        ("email", "ann@example.com"),
        ("password", PASSWORD),
        ("first_name", ""),
        ("last_name", ""),
        ("phone", ""),
    ];
    assert_eq!(
        post_form(&app, "/signup", &fields, None).await.status(),
        303
    );
    let taken = post_form(&app, "/signup", &fields, None).await;
    assert_eq!(taken.status(), 409);
    let html = taken.text().await.unwrap();
    assert!(html.contains("already exists"), "{html}");
    assert!(!html.contains(PASSWORD));

    let invalid = post_form(
        &app,
        "/signup",
        &[
            ("email", "not-an-address"),
            ("password", PASSWORD),
            ("first_name", ""),
            ("last_name", ""),
            ("phone", "12"),
        ],
        None,
    )
    .await;
    assert_eq!(invalid.status(), 422);
    let html = invalid.text().await.unwrap();
    assert!(
        html.contains("name@example.com") || html.contains("phone"),
        "{html}"
    );
}

#[tokio::test]
async fn cross_site_form_posts_are_refused_and_change_nothing() {
    let app = spawn_app("pages_csrf").await;
    let fields = [
        ("email", "ann@example.com"),
        ("password", PASSWORD),
        ("first_name", ""),
        ("last_name", ""),
        ("phone", ""),
    ];
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let refused = post_form(&app, "/signup", &fields, Some(origin)).await;
        assert_eq!(refused.status(), 403, "{origin}");
        assert_page_headers(&refused);
    }
    let fetch_metadata = browser()
        .post(app.url("/signup"))
        .header("sec-fetch-site", "cross-site")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_metadata.status(), 403);
    // `Origin: null` is what browsers send from a no-referrer page: accepted only when the
    // browser says the post is same-origin.
    let null_cross_site = browser()
        .post(app.url("/signup"))
        .header(header::ORIGIN, "null")
        .header("sec-fetch-site", "cross-site")
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(null_cross_site.status(), 403);
    for path in ["/signup/code", "/signup/resend"] {
        let refused = post_form(
            &app,
            path,
            &[("email", "ann@example.com"), ("code", "123456")],
            Some("https://evil.example"),
        )
        .await;
        assert_eq!(refused.status(), 403, "{path}");
    }
    assert_eq!(app.count("users").await, 0);

    // The same origin, a no-referrer page's same-origin post and PUBLIC_BASE_URL's origin are
    // accepted.
    let null_same_origin = browser()
        .post(app.url("/signup"))
        .header(header::ORIGIN, "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("email", "bob@example.com"),
            ("password", PASSWORD),
            ("first_name", ""),
            ("last_name", ""),
            ("phone", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(null_same_origin.status(), 303);
    assert_eq!(
        post_form(&app, "/signup", &fields, Some(&same_origin(&app)))
            .await
            .status(),
        303
    );
    let (token, _) = app.latest_secrets().await;
    let refused = post_form(
        &app,
        "/user/verify",
        &[("token", &token)],
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(app.events("UserVerifiedV1").await.is_empty());
    let public = app.settings.public_base_url.clone();
    let confirmed = post_form(&app, "/user/verify", &[("token", &token)], Some(&public)).await;
    assert_eq!(confirmed.status(), 200);
    assert_page_headers(&confirmed);
    assert!(
        confirmed
            .text()
            .await
            .unwrap()
            .contains("Email address verified")
    );
}

#[tokio::test]
async fn an_expired_link_shows_the_expired_page_with_the_way_to_a_new_mail() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app("pages_expired").await;
    assert_eq!(app.register(&crate::helpers::ann()).await.status(), 201);
    let (token, _) = app.latest_secrets().await;
    app.db
        .execute_unprepared("UPDATE verifications SET expires_at = now() - interval '1 second'")
        .await
        .unwrap();
    for page in [
        app.get(&format!("/user/verify?token={token}")).await,
        post_form(&app, "/user/verify", &[("token", &token)], None).await,
    ] {
        assert_eq!(page.status(), 410);
        assert_page_headers(&page);
        let html = page.text().await.unwrap();
        assert!(html.contains("This link has expired"), "{html}");
        // minijinja escapes `/` in attributes as `&#x2f;`, which browsers read as `/`.
        assert!(
            html.contains("href=\"&#x2f;signup&#x2f;check\">Get a new mail"),
            "{html}"
        );
    }
}

#[tokio::test]
async fn the_forms_share_the_api_rate_limits_and_say_so_inline() {
    let app = crate::helpers::spawn_tuned("pages_rate_limited", |settings| {
        settings.rate_limit_register =
            user_service::RateLimit::per(1, std::time::Duration::from_secs(3600));
    })
    .await;
    assert_eq!(app.register(&crate::helpers::ann()).await.status(), 201);
    let fields = [
        ("email", "bob@example.com"),
        ("password", PASSWORD),
        ("first_name", "Bob"),
        ("last_name", ""),
        ("phone", ""),
    ];
    let limited = post_form(&app, "/signup", &fields, None).await;
    assert_eq!(limited.status(), 429);
    let html = limited.text().await.unwrap();
    assert!(html.contains("Too many attempts"), "{html}");
    assert!(
        html.contains("value=\"bob@example.com\"") && html.contains("value=\"Bob\""),
        "{html}"
    );
    assert!(!html.contains(PASSWORD));
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn with_a_phone_the_check_page_takes_the_sms_code_and_sends_a_new_one() {
    let app = spawn_app("pages_phone").await;
    let fields = [
        ("email", "ann@example.com"),
        ("password", PASSWORD),
        ("first_name", ""),
        ("last_name", ""),
        ("phone", "+447400123456"),
    ];
    let created = post_form(&app, "/signup", &fields, None).await;
    assert_eq!(created.status(), 303);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        "/signup/check?email=ann%40example%2Ecom&phone=%2B447400123456"
    );
    let check = app.get(&location).await.text().await.unwrap();
    assert!(check.contains("action=\"/signup/phone\""), "{check}");
    assert!(check.contains("Code from the SMS"), "{check}");

    let code = app.latest_phone_code().await;
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let phone_form = |code: String| {
        vec![
            ("email", "ann@example.com".to_owned()),
            ("phone", "+447400123456".to_owned()),
            ("code", code),
        ]
    };
    let incorrect = browser()
        .post(app.url("/signup/phone"))
        .form(&phone_form(wrong.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(incorrect.status(), 422);
    let html = incorrect.text().await.unwrap();
    assert!(html.contains("This code is not correct."), "{html}");
    assert!(html.contains("value=\"+447400123456\""), "{html}");

    let resent = browser()
        .post(app.url("/signup/phone/resend"))
        .form(&phone_form(String::new()))
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 303);
    assert!(
        resent.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("&sms_resent=1")
    );

    let verified = browser()
        .post(app.url("/signup/phone"))
        .form(&phone_form(app.latest_phone_code().await))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 303);
    assert_eq!(
        verified.headers()["location"],
        "/signup/check?email=ann%40example%2Ecom&phone_verified=1"
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) AS n FROM users WHERE phone_verified_at IS NOT NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn a_locked_sms_code_is_said_to_be_locked() {
    let app = spawn_app("pages_phone_locked").await;
    let mut body = crate::helpers::ann();
    body["phone"] = "+447400123456".into();
    assert_eq!(app.register(&body).await.status(), 201);
    let code = app.latest_phone_code().await;
    let wrong = if code.starts_with('0') { "1" } else { "0" }.repeat(code.len());
    let mut last = String::new();
    for _ in 0..=app.settings.phone_code_max_attempts {
        last = browser()
            .post(app.url("/signup/phone"))
            .form(&[
                ("email", "ann@example.com"),
                ("phone", "+447400123456"),
                ("code", &wrong),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    assert!(last.contains("this code is locked"), "{last}");
}
