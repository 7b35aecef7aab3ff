//! Vendor webhooks and declared sources.
//!
//! Signatures are computed here independently (hmac/sha2/base64/hex), following each
//! vendor's published scheme, and checked against published test vectors where one exists
//! (RFC 4231, GitHub's documentation example, the Standard Webhooks reference libraries).
//! Then, over real HTTP on loopback against a real SQLite file: a configured webhook source
//! end to end, business keys across sources, and undeclared senders.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, TimeZone, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_core::Config;
use switchyard_core::sources::{SignatureEncoding, Sources, VerifyConfig};
use switchyard_server::webhooks::verify;

mod support;

use support::{Server, Setup, problem};

// ---------------------------------------------------------------------------------------
// Independent signing, per vendor specification
// ---------------------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Shopify: base64 of HMAC-SHA256(secret, raw body), in `X-Shopify-Hmac-Sha256`.
fn shopify_sig(secret: &str, body: &[u8]) -> String {
    B64.encode(hmac_sha256(secret.as_bytes(), body))
}

/// GitHub: `sha256=` + lower-case hex of HMAC-SHA256(secret, raw body), in
/// `X-Hub-Signature-256`.
fn github_sig(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

/// Stripe: the hex HMAC-SHA256 of `{t}.{body}` (the `v1` scheme).
fn stripe_v1(secret: &str, t: i64, body: &[u8]) -> String {
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(body);
    hex::encode(hmac_sha256(secret.as_bytes(), &msg))
}

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>`.
fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", stripe_v1(secret, t, body))
}

/// Standard Webhooks: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with
/// the base64-decoded part of the `whsec_` secret.
fn standard_sig(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap();
    let mut msg = format!("{id}.{ts}.").into_bytes();
    msg.extend_from_slice(body);
    format!("v1,{}", B64.encode(hmac_sha256(&key, &msg)))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn at(unix: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(unix, 0).unwrap()
}

fn secrets(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

// The verification configs as the configuration would produce them; `verify` takes the
// secrets' values separately, so the references here stay empty.
fn shopify_cfg() -> VerifyConfig {
    VerifyConfig::HmacSha256 {
        header: "X-Shopify-Hmac-Sha256".into(),
        encoding: SignatureEncoding::Base64,
        prefix: None,
        secrets: vec![],
    }
}

fn github_cfg() -> VerifyConfig {
    VerifyConfig::HmacSha256 {
        header: "X-Hub-Signature-256".into(),
        encoding: SignatureEncoding::Hex,
        prefix: Some("sha256=".into()),
        secrets: vec![],
    }
}

fn stripe_cfg(tolerance: u64) -> VerifyConfig {
    VerifyConfig::Stripe {
        header: "Stripe-Signature".into(),
        secrets: vec![],
        tolerance_seconds: tolerance,
    }
}

fn standard_cfg(tolerance: u64) -> VerifyConfig {
    VerifyConfig::StandardWebhooks {
        secrets: vec![],
        tolerance_seconds: tolerance,
    }
}

const NOW: i64 = 1_795_000_000;

// ---------------------------------------------------------------------------------------
// 1. Signature verification, kind by kind
// ---------------------------------------------------------------------------------------

#[test]
fn the_test_signers_reproduce_published_vectors() {
    // RFC 4231, test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // GitHub's "Validating webhook deliveries" example.
    assert_eq!(
        github_sig("It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    // Standard Webhooks reference libraries (JavaScript `sign function works`, Rust
    // `test_sign`).
    assert_eq!(
        standard_sig(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert_eq!(
        standard_sig(
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#
        ),
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
    );
}

#[test]
fn hmac_sha256_base64_shopify_style() {
    let cfg = shopify_cfg();
    let body = br##"{"id":820982911946154508,"name":"#1042"}"##;
    let sig = shopify_sig("shpss_current", body);
    let h = headers(&[("x-shopify-hmac-sha256", &sig)]);
    let check =
        |s: &[&str], h: &HeaderMap, b: &[u8]| verify(&cfg, &secrets(s), h, b, None, at(NOW));

    // valid; the header name is matched case-insensitively
    check(&["shpss_current"], &h, body).unwrap();
    let upper = headers(&[("X-Shopify-Hmac-SHA256", &sig)]);
    check(&["shpss_current"], &upper, body).unwrap();
    // RFC 4231 test case 2, base64 as Shopify sends it
    let rfc = B64.encode(
        hex::decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843").unwrap(),
    );
    check(
        &["Jefe"],
        &headers(&[("x-shopify-hmac-sha256", &rfc)]),
        b"what do ya want for nothing?",
    )
    .unwrap();

    // wrong secret
    let e = check(&["shpss_other"], &h, body).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    assert!(!e.contains(&sig) && !e.contains("shpss"), "leaks: {e}");
    // tampered body (one byte)
    check(
        &["shpss_current"],
        &h,
        br##"{"id":820982911946154508,"name":"#1043"}"##,
    )
    .unwrap_err();
    // missing, empty or unreadable header
    check(&["shpss_current"], &HeaderMap::new(), body).unwrap_err();
    check(
        &["shpss_current"],
        &headers(&[("x-shopify-hmac-sha256", "")]),
        body,
    )
    .unwrap_err();
    check(
        &["shpss_current"],
        &headers(&[("x-shopify-hmac-sha256", "not base64!")]),
        body,
    )
    .unwrap_err();
    // the hex form of the right MAC is not the base64 form the config asks for
    let hex_form = hex::encode(hmac_sha256(b"shpss_current", body));
    check(
        &["shpss_current"],
        &headers(&[("x-shopify-hmac-sha256", &hex_form)]),
        body,
    )
    .unwrap_err();
    // a truncated signature
    let short = B64.encode(&hmac_sha256(b"shpss_current", body)[..16]);
    check(
        &["shpss_current"],
        &headers(&[("x-shopify-hmac-sha256", &short)]),
        body,
    )
    .unwrap_err();

    // rotation: both secrets configured, either one verifies, a third does not
    let old = shopify_sig("shpss_old", body);
    let new = shopify_sig("shpss_new", body);
    let third = shopify_sig("shpss_third", body);
    for s in [&old, &new] {
        check(
            &["shpss_old", "shpss_new"],
            &headers(&[("x-shopify-hmac-sha256", s)]),
            body,
        )
        .unwrap();
    }
    check(
        &["shpss_old", "shpss_new"],
        &headers(&[("x-shopify-hmac-sha256", &third)]),
        body,
    )
    .unwrap_err();

    // several signatures in one header, comma or space separated: one valid one suffices
    for v in [
        format!("{third},{new}"),
        format!("{third}, {new}"),
        format!("{third} {new}"),
        format!("garbage {new} {third}"),
    ] {
        check(
            &["shpss_new"],
            &headers(&[("x-shopify-hmac-sha256", &v)]),
            body,
        )
        .unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    check(
        &["shpss_new"],
        &headers(&[("x-shopify-hmac-sha256", &format!("{third},{old}"))]),
        body,
    )
    .unwrap_err();
}

#[test]
fn hmac_sha256_hex_with_prefix_github_style() {
    let cfg = github_cfg();
    let check = |s: &[&str], sig: &str, b: &[u8]| {
        verify(
            &cfg,
            &secrets(s),
            &headers(&[("x-hub-signature-256", sig)]),
            b,
            None,
            at(NOW),
        )
    };
    // GitHub's documented example, literally
    check(
        &["It's a Secret to Everybody"],
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        b"Hello, World!",
    )
    .unwrap();

    let body = br#"{"action":"opened","number":7}"#;
    let sig = github_sig("gh-secret", body);
    check(&["gh-secret"], &sig, body).unwrap();
    // wrong secret
    check(&["gh-other"], &sig, body).unwrap_err();
    // tampered body
    check(&["gh-secret"], &sig, br#"{"action":"closed","number":7}"#).unwrap_err();
    // the base64 form is not accepted where hex is configured
    check(
        &["gh-secret"],
        &format!("sha256={}", shopify_sig("gh-secret", body)),
        body,
    )
    .unwrap_err();
    // a SHA-1 signature (X-Hub-Signature) is not a SHA-256 one
    check(
        &["gh-secret"],
        "sha1=0123456789abcdef0123456789abcdef01234567",
        body,
    )
    .unwrap_err();
    // rotation
    let old = github_sig("gh-old", body);
    let new = github_sig("gh-new", body);
    check(&["gh-old", "gh-new"], &old, body).unwrap();
    check(&["gh-old", "gh-new"], &new, body).unwrap();
    check(&["gh-new"], &old, body).unwrap_err();
    // several signatures
    let bad = github_sig("gh-nope", body);
    check(&["gh-new"], &format!("{bad},{new}"), body).unwrap();
    check(&["gh-new"], &format!("{bad} {new}"), body).unwrap();
    check(&["gh-new"], &format!("{bad},{old}"), body).unwrap_err();
}

#[test]
fn stripe_signed_timestamps() {
    let cfg = stripe_cfg(300);
    let body = br#"{"id":"evt_1","object":"event","type":"charge.succeeded"}"#;
    let check = |s: &[&str], header: &str, b: &[u8], now: i64| {
        verify(
            &cfg,
            &secrets(s),
            &headers(&[("stripe-signature", header)]),
            b,
            None,
            at(now),
        )
    };
    let sk = "whsec_stripe_current";
    let t = NOW - 10;
    check(&[sk], &stripe_header(sk, t, body), body, NOW).unwrap();
    // Stripe also sends test-mode `v0` entries; they are ignored, not a failure
    check(
        &[sk],
        &format!(
            "t={t},v1={},v0={}",
            stripe_v1(sk, t, body),
            "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        ),
        body,
        NOW,
    )
    .unwrap();

    // wrong secret
    check(&["whsec_other"], &stripe_header(sk, t, body), body, NOW).unwrap_err();
    // tampered body
    check(
        &[sk],
        &stripe_header(sk, t, body),
        br#"{"id":"evt_1","object":"event","type":"charge.refunded"}"#,
        NOW,
    )
    .unwrap_err();
    // the timestamp is signed: a replay under a fresh t does not verify
    check(
        &[sk],
        &format!("t={NOW},v1={}", stripe_v1(sk, NOW - 3600, body)),
        body,
        NOW,
    )
    .unwrap_err();
    // only v1 is Stripe's live scheme: a v0 entry alone is not a signature
    let e = check(
        &[sk],
        &format!("t={t},v0={}", stripe_v1(sk, t, body)),
        body,
        NOW,
    )
    .unwrap_err();
    assert!(e.contains("v1"), "{e}");
    // no t, no header
    check(&[sk], &format!("v1={}", stripe_v1(sk, t, body)), body, NOW).unwrap_err();
    verify(
        &cfg,
        &secrets(&[sk]),
        &HeaderMap::new(),
        body,
        None,
        at(NOW),
    )
    .unwrap_err();

    // tolerance: exactly at the edge passes, one second beyond fails, both ways
    for (t, ok) in [
        (NOW - 300, true),
        (NOW + 300, true),
        (NOW - 301, false),
        (NOW + 301, false),
        (NOW - 86_400, false),
        (NOW + 86_400, false),
    ] {
        let r = check(&[sk], &stripe_header(sk, t, body), body, NOW);
        assert_eq!(r.is_ok(), ok, "t = now{:+}: {r:?}", t - NOW);
        if !ok {
            assert!(r.unwrap_err().contains("tolerance"));
        }
    }
    // a tolerance of its own
    let wide = stripe_cfg(3600);
    verify(
        &wide,
        &secrets(&[sk]),
        &headers(&[("stripe-signature", &stripe_header(sk, NOW - 3000, body))]),
        body,
        None,
        at(NOW),
    )
    .unwrap();

    // rotation: during a roll Stripe signs with both secrets (two v1 entries); each
    // secret alone verifies too
    let old = "whsec_stripe_old";
    let new = "whsec_stripe_new";
    check(&[old, new], &stripe_header(old, t, body), body, NOW).unwrap();
    check(&[old, new], &stripe_header(new, t, body), body, NOW).unwrap();
    check(&[new], &stripe_header(old, t, body), body, NOW).unwrap_err();
    // several v1 signatures, one valid
    let both = format!(
        "t={t},v1={},v1={}",
        stripe_v1("whsec_unknown", t, body),
        stripe_v1(new, t, body)
    );
    check(&[new], &both, body, NOW).unwrap();
    let none_valid = format!(
        "t={t},v1={},v1={}",
        stripe_v1("whsec_unknown", t, body),
        stripe_v1(old, t, body)
    );
    check(&[new], &none_valid, body, NOW).unwrap_err();
}

#[test]
fn standard_webhooks() {
    let cfg = standard_cfg(300);
    let sw = |id: &str, ts: i64, sig: &str| {
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", sig),
        ])
    };
    let check = |s: &[&str], h: &HeaderMap, b: &[u8], now: i64| {
        verify(&cfg, &secrets(s), h, b, None, at(now))
    };

    // The specification's reference vector, verified at its own time.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    let ts = 1614265330;
    let body = br#"{"test": 2432232314}"#;
    let vector = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    check(&[secret], &sw(id, ts, vector), body, ts).unwrap();
    // ... and the secret without its `whsec_` prefix, as the reference libraries accept
    check(
        &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        &sw(id, ts, vector),
        body,
        ts,
    )
    .unwrap();
    // the reference libraries' multi-signature case: v2 entries and unknown v1 ignored
    let multi = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {vector} v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
    );
    check(&[secret], &sw(id, ts, &multi), body, ts).unwrap();
    // the same vector is too old today
    let e = check(&[secret], &sw(id, ts, vector), body, NOW).unwrap_err();
    assert!(e.contains("tolerance"), "{e}");
    // the Rust reference library's vector
    check(
        &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
        &sw(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
        br#"{"email":"test@example.com","username":"test_user"}"#,
        1649367553,
    )
    .unwrap();

    // Our own signatures at NOW.
    let key = format!("whsec_{}", B64.encode(b"0123456789abcdef0123456789abcdef"));
    let body = br#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let t = NOW - 5;
    let sig = standard_sig(&key, id, t, body);
    check(&[&key], &sw(id, t, &sig), body, NOW).unwrap();
    // wrong secret
    let other = format!("whsec_{}", B64.encode(b"another key, 24 bytes long"));
    check(&[&other], &sw(id, t, &sig), body, NOW).unwrap_err();
    // tampered body, id or timestamp (all three are signed)
    check(
        &[&key],
        &sw(id, t, &sig),
        br#"{"type":"invoice.paid","data":{"id":"in_2"}}"#,
        NOW,
    )
    .unwrap_err();
    check(&[&key], &sw("msg_other", t, &sig), body, NOW).unwrap_err();
    check(&[&key], &sw(id, t + 1, &sig), body, NOW).unwrap_err();
    // the key is the base64-decoded secret, not the secret's text
    let wrong_key = format!(
        "v1,{}",
        B64.encode(hmac_sha256(
            key.as_bytes(),
            format!("{id}.{t}.{}", std::str::from_utf8(body).unwrap()).as_bytes()
        ))
    );
    check(&[&key], &sw(id, t, &wrong_key), body, NOW).unwrap_err();
    // missing headers, a bare signature without its version, a partial signature
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = sw(id, t, &sig);
        h.remove(missing);
        let e = check(&[&key], &h, body, NOW).unwrap_err();
        assert!(e.contains(missing), "{e}");
    }
    check(
        &[&key],
        &sw(id, t, sig.trim_start_matches("v1,")),
        body,
        NOW,
    )
    .unwrap_err();
    check(&[&key], &sw(id, t, &sig[..8]), body, NOW).unwrap_err();
    check(&[&key], &sw(id, t, "v1,"), body, NOW).unwrap_err();
    let mut h = sw(id, t, &sig);
    h.insert("webhook-timestamp", HeaderValue::from_static("hello"));
    check(&[&key], &h, body, NOW).unwrap_err();

    // tolerance, both ways
    for (ts, ok) in [
        (NOW - 300, true),
        (NOW + 300, true),
        (NOW - 301, false),
        (NOW + 301, false),
    ] {
        let sig = standard_sig(&key, id, ts, body);
        let r = check(&[&key], &sw(id, ts, &sig), body, NOW);
        assert_eq!(r.is_ok(), ok, "ts = now{:+}: {r:?}", ts - NOW);
    }

    // rotation
    let sig_other = standard_sig(&other, id, t, body);
    check(&[&key, &other], &sw(id, t, &sig), body, NOW).unwrap();
    check(&[&key, &other], &sw(id, t, &sig_other), body, NOW).unwrap();
    let third = format!("whsec_{}", B64.encode(b"a third key of some length"));
    check(
        &[&key, &other],
        &sw(id, t, &standard_sig(&third, id, t, body)),
        body,
        NOW,
    )
    .unwrap_err();
    // several signatures, space separated, one valid
    let bad = standard_sig(&third, id, t, body);
    check(&[&key], &sw(id, t, &format!("{bad} {sig}")), body, NOW).unwrap();
    check(
        &[&key],
        &sw(id, t, &format!("{bad} {sig_other}")),
        body,
        NOW,
    )
    .unwrap_err();
}

#[test]
fn bearer_tokens() {
    let cfg = VerifyConfig::Bearer { secrets: vec![] };
    let body = b"{}";
    let check =
        |s: &[&str], h: &HeaderMap, b: &[u8]| verify(&cfg, &secrets(s), h, b, None, at(NOW));
    let auth = |v: &str| headers(&[("authorization", v)]);
    check(&["tok-current"], &auth("Bearer tok-current"), body).unwrap();
    // the scheme is case-insensitive (RFC 9110 section 11.1)
    check(&["tok-current"], &auth("bearer tok-current"), body).unwrap();
    // a bearer token does not sign the body: any body passes with the right token
    check(&["tok-current"], &auth("Bearer tok-current"), b"anything").unwrap();
    // wrong token, a prefix of it, a longer one, another scheme, nothing
    check(&["tok-current"], &auth("Bearer tok-other"), body).unwrap_err();
    check(&["tok-current"], &auth("Bearer tok-curren"), body).unwrap_err();
    check(&["tok-current"], &auth("Bearer tok-current2"), body).unwrap_err();
    check(&["tok-current"], &auth("Basic dG9rLWN1cnJlbnQ="), body).unwrap_err();
    check(&["tok-current"], &auth("tok-current"), body).unwrap_err();
    check(&["tok-current"], &HeaderMap::new(), body).unwrap_err();
    // the path is not where a bearer source takes its secret
    verify(
        &cfg,
        &secrets(&["tok-current"]),
        &HeaderMap::new(),
        body,
        Some("tok-current"),
        at(NOW),
    )
    .unwrap_err();
    // rotation
    check(&["tok-old", "tok-new"], &auth("Bearer tok-old"), body).unwrap();
    check(&["tok-old", "tok-new"], &auth("Bearer tok-new"), body).unwrap();
    check(&["tok-new"], &auth("Bearer tok-old"), body).unwrap_err();
}

#[test]
fn path_tokens() {
    let cfg = VerifyConfig::PathToken { secrets: vec![] };
    let check = |s: &[&str], t: Option<&str>, h: &HeaderMap| {
        verify(&cfg, &secrets(s), h, b"{}", t, at(NOW))
    };
    let none = HeaderMap::new();
    check(&["p4th-t0ken"], Some("p4th-t0ken"), &none).unwrap();
    check(&["p4th-t0ken"], Some("p4th-t0ke"), &none).unwrap_err();
    check(&["p4th-t0ken"], Some("p4th-t0ken-"), &none).unwrap_err();
    check(&["p4th-t0ken"], Some(""), &none).unwrap_err();
    let e = check(&["p4th-t0ken"], None, &none).unwrap_err();
    assert!(e.contains("/v1/webhooks/<name>/<token>"), "{e}");
    // a bearer header is not a path token
    check(
        &["p4th-t0ken"],
        None,
        &headers(&[("authorization", "Bearer p4th-t0ken")]),
    )
    .unwrap_err();
    // rotation
    check(&["old-path", "new-path"], Some("old-path"), &none).unwrap();
    check(&["old-path", "new-path"], Some("new-path"), &none).unwrap();
    check(&["new-path"], Some("old-path"), &none).unwrap_err();
}

/// A timestamp far outside the range of `now - t` must be refused, not overflow.
#[test]
fn absurd_timestamps_are_refused_not_overflowed() {
    let body = b"{}";
    for t in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
        let h = headers(&[("stripe-signature", &stripe_header("s", t, body))]);
        let r = verify(&stripe_cfg(300), &secrets(&["s"]), &h, body, None, at(NOW));
        assert!(r.unwrap_err().contains("tolerance"));

        let key = format!("whsec_{}", B64.encode(b"0123456789abcdef01234567"));
        let h = headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &t.to_string()),
            ("webhook-signature", &standard_sig(&key, "msg_1", t, body)),
        ]);
        let r = verify(&standard_cfg(300), &[key], &h, body, None, at(NOW));
        assert!(r.unwrap_err().contains("tolerance"));
    }
}

// ---------------------------------------------------------------------------------------
// A server on loopback, configured from TOML
// ---------------------------------------------------------------------------------------

/// Sets a fresh, uniquely named environment variable and returns its name, so parallel
/// tests never share (or race on) a secret.
fn env_secret(value: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "SWITCHYARD_WEBHOOKS_TEST_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    // SAFETY: every name is new, so no other thread reads or writes this variable; std
    // serialises its own environment accesses.
    unsafe { std::env::set_var(&name, value) };
    name
}

async fn start_with(config_toml: &str) -> Server {
    let config = Config::parse(config_toml, "t.toml", vec![])
        .unwrap_or_else(|e| panic!("test configuration: {e}"));
    support::start(Setup {
        sources: Sources::compile(&config).unwrap(),
        ..Default::default()
    })
    .await
}

impl Server {
    fn webhook(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/webhooks/{path}", self.base))
    }

    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        self.get_as(path_and_query, &self.viewer).await
    }

    /// The events a `GET /v1/events?…` query returns (asserting 200).
    async fn events(&self, query: &str) -> Vec<Value> {
        let (st, body) = self.get(&format!("/v1/events?{query}")).await;
        assert_eq!(st, StatusCode::OK, "{query}: {body}");
        body["events"].as_array().unwrap().clone()
    }
}

/// `source id` of each event, in order.
fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"]["source"].as_str().unwrap(),
                e["event"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 2. A Shopify-style webhook source end to end
// ---------------------------------------------------------------------------------------

const SHOP_URI: &str = "https://shop.example.com/admin";

fn shopify_config(secret_env: &str) -> String {
    format!(
        r#"
[ingest]
accept_undeclared_sources = false

[[sources]]
name = "shop-orders"
kind = "webhook"
source = "{SHOP_URI}"
keys = {{ shop_order = ".data.name", shop_order_id = ".data.id" }}
[sources.verify]
kind = "hmac-sha256"
header = "X-Shopify-Hmac-Sha256"
secrets = ["env:{secret_env}"]
[sources.event]
id = "header:X-Shopify-Webhook-Id"
type = '"shop.order." + ($headers["x-shopify-topic"] | split("/") | .[1])'
subject = ".name"
time = ".created_at"

[[sources]]
name = "odoo"
kind = "cloudevents"
source = "https://odoo.example.com/*"
keys = {{ sale_order = ".data.name", shop_order = ".data.origin" }}

[[sources]]
name = "odoo-stock"
kind = "cloudevents"
source = "https://odoo.example.com/stock/*"
keys = {{ picking = ".data.name", sale_order = ".data.origin" }}
"#
    )
}

/// A Shopify order payload (shape and id size as in Shopify's examples: ids exceed 2^53).
fn shopify_order(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": 820982911946154508u64,
        "name": name,
        "email": "jon@example.com",
        "created_at": "2026-11-23T09:00:00-05:00",
        "currency": "EUR",
        "total_price": "12.50",
        "line_items": [{"id": 866550311766439020u64, "sku": "SKU-1", "quantity": 1}]
    }))
    .unwrap()
}

impl Server {
    async fn shopify(
        &self,
        webhook_id: Option<&str>,
        topic: &str,
        body: &[u8],
        sig: &str,
    ) -> reqwest::Response {
        let mut r = self
            .webhook("shop-orders")
            .header("content-type", "application/json")
            .header("x-shopify-topic", topic)
            .header("x-shopify-shop-domain", "example.myshopify.com")
            .header("x-shopify-api-version", "2025-10")
            .header("X-Shopify-Hmac-Sha256", sig);
        if let Some(id) = webhook_id {
            r = r.header("X-Shopify-Webhook-Id", id);
        }
        r.body(body.to_vec()).send().await.unwrap()
    }
}

#[tokio::test]
async fn a_shopify_order_webhook_end_to_end() {
    let secret = "shpss_5f0c1a2b3c4d5e6f";
    let s = start_with(&shopify_config(&env_secret(secret))).await;
    let body = shopify_order("#1042");
    let wid = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043";
    let sig = shopify_sig(secret, &body);

    let r = s.shopify(Some(wid), "orders/create", &body, &sig).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["status"], "stored", "{ack}");
    assert_eq!(ack["source"], SHOP_URI);
    assert_eq!(ack["id"], wid);
    assert_eq!(ack["type"], "shop.order.create");
    assert!(ack.get("warnings").is_none(), "{ack}");
    let seq = ack["seq"].as_i64().unwrap();

    let (st, got) = s.get(&format!("/v1/events/{seq}")).await;
    assert_eq!(st, StatusCode::OK);
    let expected_data: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        got["event"],
        json!({
            "specversion": "1.0",
            "id": wid,
            "source": SHOP_URI,
            "type": "shop.order.create",
            "subject": "#1042",
            "time": "2026-11-23T09:00:00-05:00",
            "datacontenttype": "application/json",
            "data": expected_data,
        })
    );
    // the 64-bit Shopify ids (beyond 2^53) survive exactly, in the data and through jq
    assert_eq!(
        got["event"]["data"]["id"].as_u64(),
        Some(820982911946154508)
    );
    assert_eq!(
        got["keys"],
        json!([
            {"name": "shop_order", "value": "#1042"},
            {"name": "shop_order_id", "value": "820982911946154508"}
        ])
    );

    // Shopify retries with the same webhook id: a duplicate, the same seq, nothing new
    let r = s.shopify(Some(wid), "orders/create", &body, &sig).await;
    assert_eq!(r.status(), StatusCode::OK);
    let dup: Value = r.json().await.unwrap();
    assert_eq!(dup["status"], "duplicate");
    assert_eq!(dup["seq"], seq);
    assert_eq!(s.count().await, 1);

    // bad signature (another secret), tampered body, missing signature: 403, nothing stored
    let body2 = shopify_order("#1043");
    let r = s
        .shopify(
            Some("wid-2"),
            "orders/create",
            &body2,
            &shopify_sig("shpss_wrong", &body2),
        )
        .await;
    let p = problem(r, 403, "invalid-signature").await;
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("nothing was stored"), "{p}");
    assert!(!detail.contains(secret), "{p}");
    let r = s
        .shopify(Some("wid-2"), "orders/create", &body2, &sig)
        .await;
    problem(r, 403, "invalid-signature").await;
    let r = s
        .webhook("shop-orders")
        .header("content-type", "application/json")
        .header("x-shopify-topic", "orders/create")
        .header("X-Shopify-Webhook-Id", "wid-2")
        .body(body2.clone())
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;
    assert_eq!(s.count().await, 1);

    // an unknown webhook name: 404, whatever the signature
    let r = s
        .webhook("shop-orderz")
        .header("X-Shopify-Hmac-Sha256", &sig)
        .header("X-Shopify-Webhook-Id", "wid-3")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    problem(r, 404, "not-found").await;
    // a CloudEvents source is not a webhook endpoint
    let r = s.webhook("odoo").body("{}").send().await.unwrap();
    problem(r, 404, "not-found").await;

    // signed correctly, but the mapping finds no id (the header is missing): 400
    let r = s
        .shopify(None, "orders/create", &body2, &shopify_sig(secret, &body2))
        .await;
    let p = problem(r, 400, "invalid-request").await;
    assert_eq!(p["errors"][0]["field"], "id", "{p}");
    assert_eq!(s.count().await, 1);

    // another topic, another event id: a second event with its own type
    let r = s
        .shopify(
            Some("wid-4"),
            "orders/updated",
            &body2,
            &shopify_sig(secret, &body2),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["type"], "shop.order.updated");
    assert_eq!(s.count().await, 2);
}

#[tokio::test]
async fn every_verification_kind_over_http() {
    let shop = [env_secret("hmac-old"), env_secret("hmac-new")];
    let gh = [env_secret("gh-old"), env_secret("gh-new")];
    let stripe = [
        env_secret("whsec_stripe_old"),
        env_secret("whsec_stripe_new"),
    ];
    let sw_old = format!("whsec_{}", B64.encode(b"standard-webhooks-key-old"));
    let sw_new = format!("whsec_{}", B64.encode(b"standard-webhooks-key-new"));
    let sw = [env_secret(&sw_old), env_secret(&sw_new)];
    let bearer = [env_secret("bearer-old"), env_secret("bearer-new")];
    let path = [env_secret("path-old_1.x~"), env_secret("path-new_2.y~")];
    let config = format!(
        r#"
[[sources]]
name = "k-hmac"
kind = "webhook"
source = "https://k.example.com/hmac"
verify = {{ kind = "hmac-sha256", header = "X-Shopify-Hmac-Sha256", secrets = ["env:{}", "env:{}"] }}
event = {{ id = ".id", type = '"k.hmac"' }}

[[sources]]
name = "k-github"
kind = "webhook"
source = "https://k.example.com/github"
verify = {{ kind = "hmac-sha256", header = "X-Hub-Signature-256", encoding = "hex", prefix = "sha256=", secrets = ["env:{}", "env:{}"] }}
event = {{ id = "header:X-GitHub-Delivery", type = '"k.github." + $headers["x-github-event"]' }}

[[sources]]
name = "k-stripe"
kind = "webhook"
source = "https://k.example.com/stripe"
verify = {{ kind = "stripe", secrets = ["env:{}", "env:{}"], tolerance_seconds = 300 }}
event = {{ id = ".id", type = ".type" }}

[[sources]]
name = "k-standard"
kind = "webhook"
source = "https://k.example.com/standard"
verify = {{ kind = "standard-webhooks", secrets = ["env:{}", "env:{}"] }}
event = {{ id = "header:webhook-id", type = ".type" }}

[[sources]]
name = "k-bearer"
kind = "webhook"
source = "https://k.example.com/bearer"
verify = {{ kind = "bearer", secrets = ["env:{}", "env:{}"] }}
event = {{ id = ".id", type = '"k.bearer"' }}

[[sources]]
name = "k-path"
kind = "webhook"
source = "https://k.example.com/path"
verify = {{ kind = "path-token", secrets = ["env:{}", "env:{}"] }}
event = {{ id = ".id", type = '"k.path"' }}
"#,
        shop[0],
        shop[1],
        gh[0],
        gh[1],
        stripe[0],
        stripe[1],
        sw[0],
        sw[1],
        bearer[0],
        bearer[1],
        path[0],
        path[1],
    );
    let s = start_with(&config).await;
    let mut stored = 0;
    let ok = |r: reqwest::Response| async move {
        let st = r.status();
        let b: Value = r.json().await.unwrap();
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        assert_eq!(b["status"], "stored");
        b
    };

    // HMAC, base64
    for (i, secret) in ["hmac-old", "hmac-new"].into_iter().enumerate() {
        let body = format!(r#"{{"id":"h-{i}"}}"#);
        let r = s
            .webhook("k-hmac")
            .header(
                "X-Shopify-Hmac-Sha256",
                shopify_sig(secret, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        ok(r).await;
        stored += 1;
    }
    let body = r#"{"id":"h-bad"}"#;
    let r = s
        .webhook("k-hmac")
        .header(
            "X-Shopify-Hmac-Sha256",
            shopify_sig("hmac-x", body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;

    // HMAC, hex with prefix, several signatures in the header
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    let both = format!(
        "{},{}",
        github_sig("gh-x", body.as_bytes()),
        github_sig("gh-new", body.as_bytes())
    );
    let r = s
        .webhook("k-github")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("X-Hub-Signature-256", both)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok(r).await["type"], "k.github.ping");
    stored += 1;
    let r = s
        .webhook("k-github")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "72d3162e-0000")
        .header("X-Hub-Signature-256", github_sig("gh-x", body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;

    // Stripe, with real time
    let now = Utc::now().timestamp();
    for (i, secret) in ["whsec_stripe_old", "whsec_stripe_new"]
        .into_iter()
        .enumerate()
    {
        let body = format!(r#"{{"id":"evt_{i}","type":"charge.succeeded"}}"#);
        let r = s
            .webhook("k-stripe")
            .header(
                "Stripe-Signature",
                stripe_header(secret, now, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        ok(r).await;
        stored += 1;
    }
    let body = r#"{"id":"evt_late","type":"charge.succeeded"}"#;
    for t in [now - 600, now + 600] {
        let r = s
            .webhook("k-stripe")
            .header(
                "Stripe-Signature",
                stripe_header("whsec_stripe_new", t, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        problem(r, 403, "invalid-signature").await;
    }

    // a timestamp at the very end of i64 is refused with a 403, not a dropped connection
    let r = s
        .webhook("k-stripe")
        .header(
            "Stripe-Signature",
            stripe_header("whsec_stripe_new", i64::MIN, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;

    // Standard Webhooks, with real time
    for (i, secret) in [&sw_old, &sw_new].into_iter().enumerate() {
        let body = r#"{"type":"invoice.paid","data":{}}"#;
        let id = format!("msg_{i}");
        let r = s
            .webhook("k-standard")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                standard_sig(secret, &id, now, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        let b = ok(r).await;
        assert_eq!(b["id"], id);
        assert_eq!(b["type"], "invoice.paid");
        stored += 1;
    }
    let body = r#"{"type":"invoice.paid","data":{}}"#;
    for t in [now - 600, now + 600] {
        let r = s
            .webhook("k-standard")
            .header("webhook-id", "msg_late")
            .header("webhook-timestamp", t.to_string())
            .header(
                "webhook-signature",
                standard_sig(&sw_new, "msg_late", t, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        problem(r, 403, "invalid-signature").await;
    }

    let r = s
        .webhook("k-standard")
        .header("webhook-id", "msg_min")
        .header("webhook-timestamp", i64::MIN.to_string())
        .header(
            "webhook-signature",
            standard_sig(&sw_new, "msg_min", i64::MIN, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;

    // Bearer
    for (i, secret) in ["bearer-old", "bearer-new"].into_iter().enumerate() {
        let r = s
            .webhook("k-bearer")
            .bearer_auth(secret)
            .body(format!(r#"{{"id":"b-{i}"}}"#))
            .send()
            .await
            .unwrap();
        ok(r).await;
        stored += 1;
    }
    let r = s
        .webhook("k-bearer")
        .bearer_auth("bearer-x")
        .body(r#"{"id":"b-x"}"#)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;
    // an API token is not this webhook's bearer secret
    let r = s
        .webhook("k-bearer")
        .bearer_auth(&s.ingest)
        .body(r#"{"id":"b-y"}"#)
        .send()
        .await
        .unwrap();
    problem(r, 403, "invalid-signature").await;

    // Path token (the token is percent-decoded from the path)
    for (i, token) in ["path-old_1.x~", "path-new_2.y%7E"].into_iter().enumerate() {
        let r = s
            .webhook(&format!("k-path/{token}"))
            .body(format!(r#"{{"id":"p-{i}"}}"#))
            .send()
            .await
            .unwrap();
        ok(r).await;
        stored += 1;
    }
    for path in ["k-path/path-x", "k-path"] {
        let r = s
            .webhook(path)
            .body(r#"{"id":"p-x"}"#)
            .send()
            .await
            .unwrap();
        problem(r, 403, "invalid-signature").await;
    }

    assert_eq!(s.count().await, stored);
    // every refusal stored nothing: exactly the accepted ids are in the log
    let all = s.events("limit=1000").await;
    let mut got: Vec<String> = all
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "b-0",
            "b-1",
            "evt_0",
            "evt_1",
            "h-0",
            "h-1",
            "msg_0",
            "msg_1",
            "p-0",
            "p-1"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// 3. Business keys across sources, and undeclared senders
// ---------------------------------------------------------------------------------------

fn odoo(source: &str, id: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": source,
        "type": "odoo.record.updated", "data": data,
    })
}

#[tokio::test]
async fn business_keys_find_events_across_sources() {
    let secret = "shpss_keys";
    let s = start_with(&shopify_config(&env_secret(secret))).await;

    // 1: the shop's webhook for order #1042
    let body = shopify_order("#1042");
    let r = s
        .shopify(
            Some("wid-1042"),
            "orders/create",
            &body,
            &shopify_sig(secret, &body),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // 2: the ERP's sale order for it (prefix source "odoo")
    let sale = odoo(
        "https://odoo.example.com/sale",
        "sale.order/42",
        json!({"name": "S00042", "origin": "#1042"}),
    );
    // 3: the warehouse picking for the sale order (longer prefix "odoo-stock")
    let picking = odoo(
        "https://odoo.example.com/stock/wh1",
        "stock.picking/17",
        json!({"name": "WH/OUT/00017", "origin": "S00042"}),
    );
    // 4: unicode and form-encoding-sensitive characters
    let odd = odoo(
        "https://odoo.example.com/sale",
        "sale.order/43",
        json!({"name": "Zürich/Ω-7", "origin": "A+B 1&2=3"}),
    );
    for e in [&sale, &picking, &odd] {
        let r = s.structured(e).await;
        let st = r.status();
        let b: Value = r.json().await.unwrap();
        assert_eq!(st, StatusCode::ACCEPTED, "{b}");
        assert!(b.get("warnings").is_none(), "{b}");
    }
    let shop = "https://shop.example.com/admin wid-1042";
    let sale_id = "https://odoo.example.com/sale sale.order/42";
    let picking_id = "https://odoo.example.com/stock/wh1 stock.picking/17";
    let odd_id = "https://odoo.example.com/sale sale.order/43";

    // one shop order, two systems
    let found = s.events("key=%231042").await;
    assert_eq!(ids(&found), [shop, sale_id]);
    assert_eq!(
        found[0]["keys"],
        json!([
            {"name": "shop_order", "value": "#1042"},
            {"name": "shop_order_id", "value": "820982911946154508"}
        ])
    );
    assert_eq!(
        found[1]["keys"],
        json!([
            {"name": "sale_order", "value": "S00042"},
            {"name": "shop_order", "value": "#1042"}
        ])
    );
    assert_eq!(
        ids(&s.events("key=%231042&key_name=shop_order").await),
        [shop, sale_id]
    );
    assert!(s.events("key=%231042&key_name=sale_order").await.is_empty());
    // the value must match exactly
    assert!(s.events("key=1042").await.is_empty());
    assert!(s.events("key=%231042%20").await.is_empty());

    // one sale order, carried by the sale and (as its origin) by the picking
    assert_eq!(ids(&s.events("key=S00042").await), [sale_id, picking_id]);
    assert_eq!(
        ids(&s.events("key=S00042&key_name=sale_order").await),
        [sale_id, picking_id]
    );
    assert!(s.events("key=S00042&key_name=picking").await.is_empty());

    // keys with '/', percent-encoded or not (a '/' is legal in a query)
    let found = s.events("key=WH%2FOUT%2F00017").await;
    assert_eq!(ids(&found), [picking_id]);
    assert_eq!(
        found[0]["keys"],
        json!([
            {"name": "picking", "value": "WH/OUT/00017"},
            {"name": "sale_order", "value": "S00042"}
        ])
    );
    assert_eq!(
        ids(&s.events("key=WH/OUT/00017&key_name=picking").await),
        [picking_id]
    );

    // unicode keys round-trip exactly, and so do '+', ' ', '&' and '='
    let found = s.events("key=Z%C3%BCrich%2F%CE%A9-7").await;
    assert_eq!(ids(&found), [odd_id]);
    assert_eq!(
        found[0]["keys"],
        json!([
            {"name": "sale_order", "value": "Zürich/Ω-7"},
            {"name": "shop_order", "value": "A+B 1&2=3"}
        ])
    );
    assert_eq!(found[0]["event"], odd);
    assert_eq!(
        ids(&s.events("key=A%2BB%201%262%3D3&key_name=shop_order").await),
        [odd_id]
    );
    assert_eq!(ids(&s.events("key=A%2BB+1%262%3D3").await), [odd_id]);
    // an unencoded '+' is a space in a query string: "A B 1&2=3" is another key
    assert!(s.events("key=A+B+1%262%3D3").await.is_empty());
    // NFD "Zu\u{308}rich" is not the NFC "Zürich" stored: bytes are compared
    assert!(s.events("key=Zu%CC%88rich%2F%CE%A9-7").await.is_empty());

    // since / until (received time) combine with the key
    assert_eq!(
        s.events("key=S00042&since=2000-01-01T00:00:00Z")
            .await
            .len(),
        2
    );
    assert!(
        s.events("key=S00042&since=2999-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert!(
        s.events("key=S00042&until=2000-01-01T00:00:00%2B00:00")
            .await
            .is_empty()
    );
    assert_eq!(
        s.events("key=S00042&since=2000-01-01T01:00:00%2B01:00&until=2999-01-01T00:00:00Z")
            .await
            .len(),
        2
    );
    let r = s
        .http
        .get(format!("{}/v1/events?since=yesterday", s.base))
        .bearer_auth(&s.viewer)
        .send()
        .await
        .unwrap();
    let p = problem(r, 400, "invalid-request").await;
    assert_eq!(p["errors"][0]["field"], "since");
    let r = s
        .http
        .get(format!("{}/v1/events?key_name=shop_order", s.base))
        .bearer_auth(&s.viewer)
        .send()
        .await
        .unwrap();
    problem(r, 400, "invalid-request").await;

    // one event by source and id, both with '/', percent-encoded in the query
    let (st, one) = s
        .get("/v1/events/one?source=https%3A%2F%2Fodoo.example.com%2Fstock%2Fwh1&id=stock.picking%2F17")
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(one["event"], picking);
    let (st, one) = s
        .get("/v1/events/one?source=https%3A%2F%2Fshop.example.com%2Fadmin&id=wid-1042")
        .await;
    assert_eq!(st, StatusCode::OK, "{one}");
    assert_eq!(one["event"]["subject"], "#1042");
    for q in [
        "source=https%3A%2F%2Fodoo.example.com%2Fstock%2Fwh1&id=stock.picking%2F18",
        "source=https%3A%2F%2Fodoo.example.com%2Fstock%2Fwh2&id=stock.picking%2F17",
        "source=https%3A%2F%2Fodoo.example.com%2Fsale&id=stock.picking%2F17",
    ] {
        let r = s
            .http
            .get(format!("{}/v1/events/one?{q}", s.base))
            .bearer_auth(&s.viewer)
            .send()
            .await
            .unwrap();
        problem(r, 404, "not-found").await;
    }
    let r = s
        .http
        .get(format!(
            "{}/v1/events/one?source=https%3A%2F%2Fodoo.example.com%2Fsale",
            s.base
        ))
        .bearer_auth(&s.viewer)
        .send()
        .await
        .unwrap();
    problem(r, 400, "invalid-request").await;
    // reading needs a token
    let r = s
        .http
        .get(format!("{}/v1/events?key=S00042", s.base))
        .send()
        .await
        .unwrap();
    problem(r, 401, "unauthenticated").await;
}

#[tokio::test]
async fn undeclared_sources_are_refused_or_accepted_by_configuration() {
    // refused: ingest.accept_undeclared_sources = false
    let s = start_with(&shopify_config(&env_secret("shpss_undeclared"))).await;
    let crm = json!({
        "specversion": "1.0", "id": "c-1", "source": "https://crm.example.com",
        "type": "crm.contact.created", "data": {"name": "Jon"}
    });
    let p = problem(s.structured(&crm).await, 403, "undeclared-source").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("https://crm.example.com")
    );
    assert_eq!(p["errors"][0]["field"], "source");
    assert_eq!(p["errors"][0]["pointer"], "/source");
    // "https://odoo.example.com/*" covers /sale but not a look-alike host
    let mut lookalike = crm.clone();
    lookalike["source"] = json!("https://odoo.example.com.evil.test/sale");
    problem(s.structured(&lookalike).await, 403, "undeclared-source").await;
    // binary mode is refused the same way
    let r = s
        .http
        .post(format!("{}/v1/events", s.base))
        .bearer_auth(&s.ingest)
        .header("ce-specversion", "1.0")
        .header("ce-id", "c-2")
        .header("ce-source", "https://crm.example.com")
        .header("ce-type", "crm.contact.created")
        .header("content-type", "application/json")
        .body(r#"{"name":"Jon"}"#)
        .send()
        .await
        .unwrap();
    let p = problem(r, 403, "undeclared-source").await;
    assert_eq!(
        p["errors"][0]["header"], "ce-source",
        "binary mode names the header: {p}"
    );
    assert!(p["errors"][0].get("pointer").is_none());
    // a batch with one undeclared member stores nothing, and names the member
    let declared = odoo(
        "https://odoo.example.com/sale",
        "sale.order/1",
        json!({"name": "S00001"}),
    );
    let r = s
        .http
        .post(format!("{}/v1/events", s.base))
        .bearer_auth(&s.ingest)
        .header("content-type", "application/cloudevents-batch+json")
        .body(json!([declared, crm]).to_string())
        .send()
        .await
        .unwrap();
    let p = problem(r, 403, "undeclared-source").await;
    assert_eq!(p["errors"][0]["index"], 1);
    assert_eq!(p["errors"][0]["pointer"], "/1/source");
    assert_eq!(s.count().await, 0);
    // the declared one alone is fine
    let r = s.structured(&declared).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s.count().await, 1);

    // accepted: the default, and an explicit true; undeclared events carry no keys
    for ingest in ["", "[ingest]\naccept_undeclared_sources = true\n"] {
        let s = start_with(&format!(
            "{ingest}\n[[sources]]\nname = \"odoo\"\nkind = \"cloudevents\"\nsource = \"https://odoo.example.com/*\"\nkeys = {{ sale_order = \".data.name\" }}\n"
        ))
        .await;
        let r = s.structured(&crm).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let b: Value = r.json().await.unwrap();
        let (st, got) = s.get(&format!("/v1/events/{}", b["seq"])).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(got["event"], crm);
        assert_eq!(got["keys"], json!([]));
        // Jon is not a key of anything
        assert!(s.events("key=Jon").await.is_empty());
    }
}

/// Rejections are counted per webhook, but a name no source declares must not become a
/// label value: anyone can post to `/v1/webhooks/<anything>`, and each new label value is
/// a new Prometheus series kept for the life of the process.
#[tokio::test]
async fn unknown_webhook_names_do_not_become_metric_labels() {
    let s = start_with(&shopify_config(&env_secret("shpss_metrics"))).await;
    let probe = format!("no-such-hook-{}", std::process::id());
    for path in [probe.clone(), format!("{probe}/some-token")] {
        let r = s.webhook(&path).body("{}").send().await.unwrap();
        problem(r, 404, "not-found").await;
    }
    // a declared webhook's refusals are still counted under its name
    let body = shopify_order("#1044");
    let r = s
        .shopify(
            Some("wid-m"),
            "orders/create",
            &body,
            &shopify_sig("shpss_wrong", &body),
        )
        .await;
    problem(r, 403, "invalid-signature").await;
    let text = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"webhook="shop-orders""#),
        "the declared webhook's rejection is not counted:\n{text}"
    );
    assert!(
        text.contains(r#"webhook="(undeclared)",reason="not-found""#),
        "{text}"
    );
    assert!(
        !text.contains(&probe),
        "an undeclared webhook name became a metric label:\n{text}"
    );
}

#[tokio::test]
async fn an_ingest_token_cannot_speak_for_a_webhook_source() {
    // Only the verified webhook endpoint may produce events with the webhook's source URI,
    // even where undeclared sources are accepted: otherwise a token holder could claim its
    // ids ahead of the real deliveries, which would then be dropped as duplicates.
    let config = shopify_config(&env_secret("shpss_spoof")).replace(
        "accept_undeclared_sources = false",
        "accept_undeclared_sources = true",
    );
    let s = start_with(&config).await;
    let spoof = json!({"specversion": "1.0", "id": "1001", "source": SHOP_URI, "type": "shop.order.create"});
    let p = problem(s.structured(&spoof).await, 403, "forbidden").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("/v1/webhooks/shop-orders"),
        "{p}"
    );
    assert_eq!(s.count().await, 0);
}
