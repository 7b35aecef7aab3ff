//! The recorded Odoo 18 transcripts (testdata/odoo/*.json), read as they are.
#![allow(dead_code)]

use serde_json::Value;

pub const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/odoo");

/// One recorded exchange.
pub struct Transcript {
    /// File name without `.json`, e.g. `01_17_xmlrpc_write_deleted_missingerror`.
    pub name: String,
    pub json: Value,
}

impl Transcript {
    /// The number prefix: `01_17`, `10_063`.
    pub fn id(&self) -> String {
        let mut parts = self.name.splitn(3, '_');
        format!(
            "{}_{}",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        )
    }

    pub fn protocol(&self) -> &str {
        self.json["protocol"].as_str().unwrap_or("")
    }

    pub fn path(&self) -> &str {
        self.json["request"]["path"].as_str().unwrap_or("")
    }

    pub fn request_body(&self) -> Option<&str> {
        self.json["request"]["body"].as_str()
    }

    pub fn status(&self) -> Option<u16> {
        self.json["response"]["status"].as_u64().map(|s| s as u16)
    }

    pub fn response_body(&self) -> Option<&str> {
        self.json["response"]["body"].as_str()
    }

    /// Response headers as recorded, in order (`Set-Cookie` may repeat).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        self.json["response"]["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| Some((pair[0].as_str()?.to_owned(), pair[1].as_str()?.to_owned())))
            .collect()
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether Odoo answered this exchange (captured webhooks are Odoo's own requests).
    pub fn is_odoo_answer(&self) -> bool {
        self.status().is_some() && !self.protocol().starts_with("webhook")
    }
}

/// Every transcript, sorted by name.
pub fn all() -> Vec<Transcript> {
    let mut names: Vec<_> = std::fs::read_dir(TESTDATA)
        .expect("testdata/odoo exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| load(n.trim_end_matches(".json")))
        .collect()
}

/// One transcript by its number prefix (`01_17`) or full name.
pub fn by_id(id: &str) -> Transcript {
    all()
        .into_iter()
        .find(|t| t.id() == id || t.name == id)
        .unwrap_or_else(|| panic!("no transcript {id}"))
}

fn load(name: &str) -> Transcript {
    let path = format!("{TESTDATA}/{name}.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    Transcript {
        name: name.to_owned(),
        json,
    }
}
