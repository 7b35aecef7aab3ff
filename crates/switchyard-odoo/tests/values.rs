//! Field values against the recordings: what `values` writes is what the recorded requests
//! sent (and Odoo accepted), what it reads is what Odoo answered.

mod common;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::{Map, Value, json};
use switchyard_odoo::values::{
    Command, Many2one, read_date, read_datetime, read_many2one, read_text, read_x2many, write_date,
    write_datetime, write_many2one, write_x2many,
};
use switchyard_odoo::xmlrpc;

/// The `execute_kw` positional args of a recorded request (`[ids, vals]` for a write).
fn call_args(id: &str) -> Value {
    let t = common::by_id(id);
    let body = t.request_body().unwrap().replace("<PASSWORD>", "P");
    if t.protocol() == "xmlrpc" {
        let (_, params) = xmlrpc::decode_call(body.as_bytes()).unwrap();
        params[5].clone()
    } else {
        let request: Value = serde_json::from_str(&body).unwrap();
        request["params"]["args"][5].clone()
    }
}

/// The first record of a recorded read/search_read answer.
fn first_row(id: &str) -> Value {
    let t = common::by_id(id);
    let body = t.response_body().unwrap();
    let result = if t.protocol() == "xmlrpc" {
        xmlrpc::decode_response(body.as_bytes()).unwrap().unwrap()
    } else {
        serde_json::from_str::<Value>(body).unwrap()["result"].clone()
    };
    result[0].clone()
}

fn vals(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[test]
fn x2many_commands_write_what_odoo_accepted() {
    let rows: [(&str, &str, Vec<Command>); 9] = [
        ("10_041", "category_id", vec![Command::Set(vec![1, 2])]),
        ("10_043", "category_id", vec![Command::Link(3)]),
        ("10_045", "category_id", vec![Command::Unlink(1)]),
        (
            "10_047",
            "category_id",
            vec![Command::Create(vals(json!({"name": "sy Tag New"})))],
        ),
        ("10_051", "category_id", vec![Command::Clear]),
        ("10_055", "category_id", vec![Command::Delete(3)]),
        (
            "10_069",
            "order_line",
            vec![Command::Update(6, vals(json!({"product_uom_qty": 5})))],
        ),
        ("10_070", "order_line", vec![Command::Delete(7)]),
        (
            "10_071",
            "order_line",
            vec![
                Command::Create(vals(json!({"product_id": 5, "product_uom_qty": 3}))),
                Command::Update(6, vals(json!({"price_unit": 10}))),
            ],
        ),
    ];
    for (id, field, commands) in rows {
        let args = call_args(id);
        // create takes [vals], write [ids, vals].
        let sent = if args[0].is_object() {
            &args[0][field]
        } else {
            &args[1][field]
        };
        assert_eq!(&write_x2many(&commands), sent, "{id}");
    }
}

#[test]
fn x2many_reads_are_id_lists() {
    assert_eq!(
        read_x2many(&first_row("10_042")["category_id"]).unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        read_x2many(&first_row("10_052")["category_id"]).unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(
        read_x2many(&first_row("05_08")["order_line"]).unwrap(),
        vec![1]
    );
}

#[test]
fn many2one_reads_and_writes() {
    assert_eq!(
        read_many2one(&first_row("10_060")["parent_id"]).unwrap(),
        Some(Many2one {
            id: 22,
            name: Some("Load Partner 42 (json)".into())
        })
    );
    assert_eq!(
        read_many2one(&first_row("10_062")["parent_id"]).unwrap(),
        None
    );
    // The webhook payload reads with load=None: a bare id (06_04).
    let payload: Value =
        serde_json::from_str(common::by_id("06_04").request_body().unwrap()).unwrap();
    assert_eq!(
        read_many2one(&payload["partner_id"]).unwrap(),
        Some(Many2one { id: 19, name: None })
    );

    // What 10_059 and 10_061 sent, and Odoo applied.
    assert_eq!(
        write_many2one(Some(22)).unwrap(),
        call_args("10_059")[1]["parent_id"]
    );
    assert_eq!(
        write_many2one(None).unwrap(),
        call_args("10_061")[1]["parent_id"]
    );
    // What 10_063-10_065 sent, and Odoo took as "clear": never produced.
    for id in ["10_063", "10_064", "10_065"] {
        let sent = &call_args(id)[1]["parent_id"];
        let ours = [write_many2one(Some(22)), write_many2one(None)];
        assert!(
            ours.iter().all(|v| v.as_ref().ok() != Some(sent)),
            "{id}: {sent}"
        );
    }
    assert!(
        write_many2one(Some(0)).is_err(),
        "0 would clear the field (10_064)"
    );
}

#[test]
fn dates_and_datetimes_are_utc_strings() {
    let invoice = first_row("10_099");
    assert_eq!(
        read_date(&invoice["date"]).unwrap(),
        NaiveDate::from_ymd_opt(2026, 11, 23)
    );
    let draft = first_row("05_27");
    assert_eq!(read_date(&draft["invoice_date"]).unwrap(), None);
    assert_eq!(
        read_text(&draft["name"]).unwrap(),
        None,
        "an unnamed draft reads name false"
    );
    assert_eq!(
        write_date(NaiveDate::from_ymd_opt(2026, 12, 5)),
        first_row("10_107")["validity_date"]
    );

    // The same instant whatever the context tz (10_096 UTC, 10_097 Asia/Tokyo).
    let order_utc = read_datetime(&first_row("10_096")["date_order"]).unwrap();
    let order_tokyo = read_datetime(&first_row("10_097")["date_order"]).unwrap();
    assert_eq!(
        order_utc,
        Some(Utc.with_ymd_and_hms(2026, 11, 23, 23, 30, 0).unwrap())
    );
    assert_eq!(order_utc, order_tokyo);

    // What 09_10 wrote (accepted); 09_09's ISO form with T and Z was refused by Odoo.
    let commitment = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap();
    assert_eq!(
        write_datetime(Some(commitment)),
        call_args("09_10")[1]["commitment_date"]
    );
    let refused = &call_args("09_09")[1]["commitment_date"];
    assert!(read_datetime(refused).is_err(), "{refused}");

    // Webhook payloads carry microseconds (06_04); RPC writes whole seconds.
    let payload: Value =
        serde_json::from_str(common::by_id("06_04").request_body().unwrap()).unwrap();
    let written = read_datetime(&payload["write_date"]).unwrap().unwrap();
    assert_eq!(written.timestamp_subsec_micros(), 530_131);
    assert_eq!(write_datetime(Some(written)), json!("2026-11-23 18:08:57"));
}
