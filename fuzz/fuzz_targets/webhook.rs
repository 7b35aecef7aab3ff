//! Vendor webhooks: every verification kind must cope with any headers and body without
//! panicking.
#![no_main]

use axum::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_core::sources::{SignatureEncoding, VerifyConfig};
use switchyard_server::webhooks::verify;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(64);
    let (sig, body) = data.split_at(split);
    let Ok(sig) = HeaderValue::from_bytes(sig) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [
        "x-shopify-hmac-sha256",
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "authorization",
    ] {
        headers.insert(name, sig.clone());
    }
    let secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()];
    let kinds = [
        VerifyConfig::HmacSha256 {
            header: "X-Shopify-Hmac-Sha256".into(),
            encoding: SignatureEncoding::Base64,
            prefix: None,
            secrets: vec![],
        },
        VerifyConfig::HmacSha256 {
            header: "X-Shopify-Hmac-Sha256".into(),
            encoding: SignatureEncoding::Hex,
            prefix: Some("sha256=".into()),
            secrets: vec![],
        },
        VerifyConfig::Stripe {
            header: "Stripe-Signature".into(),
            secrets: vec![],
            tolerance_seconds: 300,
        },
        VerifyConfig::StandardWebhooks {
            secrets: vec![],
            tolerance_seconds: 300,
        },
        VerifyConfig::Bearer { secrets: vec![] },
        VerifyConfig::PathToken { secrets: vec![] },
    ];
    let now = chrono::Utc::now();
    for k in &kinds {
        let token = std::str::from_utf8(body).ok();
        let _ = verify(k, &secrets, &headers, body, token, now);
    }
});
