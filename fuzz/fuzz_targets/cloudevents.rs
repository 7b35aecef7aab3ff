//! CloudEvents over HTTP: structured, batch and binary mode parsing must never panic, and
//! whatever it accepts must round-trip through the stored form.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard_core::CloudEvent;
use switchyard_server::ingest::{Mode, parse_request};

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Structured, Mode::Batch] {
        if let Ok(events) = parse_request(mode, &HeaderMap::new(), data) {
            for p in events {
                let back = CloudEvent::from_stored_json(p.event.to_json()).expect("stored form");
                assert_eq!(back, p.event);
            }
        }
    }
    // Binary mode: the first line is `name: value` header pairs separated by `;`, the rest
    // is the body.
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for pair in head.split(|&b| b == b';') {
        if let Some(colon) = pair.iter().position(|&b| b == b':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&pair[..colon]),
                HeaderValue::from_bytes(&pair[colon + 1..]),
            )
        {
            headers.append(name, value);
        }
    }
    let _ = parse_request(Mode::Binary, &headers, body);
});
