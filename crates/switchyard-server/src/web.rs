//! The web dashboard: static files embedded in the binary (no build step, no Node.js),
//! served at `/` and `/ui/…`. The page is a client of the HTTP API with the user's token;
//! it holds no data of its own and the API enforces every permission.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Each embedded file: name, content type, content.
const FILES: [(&str, &str, &str); 6] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/api.js"),
    ),
    (
        "render.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/render.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/charts.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// Only our own scripts, styles and API; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn etags() -> &'static [String; 6] {
    static TAGS: OnceLock<[String; 6]> = OnceLock::new();
    TAGS.get_or_init(|| {
        FILES.map(|(_, _, body)| {
            let d = Sha256::digest(body.as_bytes());
            format!("\"{}\"", hex::encode(&d[..12]))
        })
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let (_, ty, body) = FILES[i];
    let tag = &etags()[i];
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    // Revalidate every time (the binary may have been upgraded), answer 304 when unchanged.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    (h, body).into_response()
}

/// `GET /`: the dashboard.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{file}`: its scripts and styles.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    serve(&file, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // An import of a file that is not in FILES would 404 in the browser.
        for (_, _, body) in FILES {
            for part in body.split("from './").skip(1) {
                let name = part.split('\'').next().unwrap();
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == name),
                    "{name} is imported but not embedded"
                );
            }
        }
        let html = FILES[0].2;
        for part in html.split("\"/ui/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(FILES.iter().any(|(n, _, _)| *n == name), "{name}");
        }
    }

    #[test]
    fn an_unchanged_file_is_not_sent_again() {
        let r = serve("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let tag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("nope.js", &h).status(), StatusCode::NOT_FOUND);
    }
}
