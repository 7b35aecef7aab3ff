//! Sales and invoicing: orders, lines, cancellation, the invoicing and payment wizards,
//! invoices — with the amounts, statuses and action dicts the recordings show.

use crate::business::next_name;
use crate::exc::{Exc, OResult};
use crate::orm::*;
use crate::registry::{Behaviour, Env};
use serde_json::{Map, Value, json};

const TAX_RATE: f64 = 0.15;

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn order_lines(env: &Env, order: Id) -> Vec<Id> {
    env.o2m_ids("sale.order.line", "order_id", order)
}

fn line_subtotal(env: &Env, line: Id) -> f64 {
    let qty = env.get_f64("sale.order.line", line, "product_uom_qty");
    let price = env.get_f64("sale.order.line", line, "price_unit");
    let disc = env.get_f64("sale.order.line", line, "discount");
    round2(qty * price * (1.0 - disc / 100.0))
}

fn qty_delivered(env: &Env, line: Id) -> f64 {
    env.find("stock.move", "sale_line_id", &json!(line))
        .into_iter()
        .filter(|m| env.get_str("stock.move", *m, "state") == "done")
        .map(|m| env.get_f64("stock.move", m, "quantity"))
        .sum()
}

fn qty_invoiced(env: &Env, line: Id) -> f64 {
    env.find("account.move.line", "sale_line_id", &json!(line))
        .into_iter()
        .filter(|l| {
            let mv = env.get_i64("account.move.line", *l, "move_id").unwrap_or(0);
            env.get_str("account.move", mv, "state") != "cancel"
        })
        .map(|l| env.get_f64("account.move.line", l, "quantity"))
        .sum()
}

fn qty_to_invoice(env: &Env, line: Id) -> f64 {
    let order = env
        .get_i64("sale.order.line", line, "order_id")
        .unwrap_or(0);
    if env.get_str("sale.order", order, "state") != "sale" {
        return 0.0;
    }
    let product = env
        .get_i64("sale.order.line", line, "product_id")
        .unwrap_or(0);
    let base = if env.get_str("product.product", product, "invoice_policy") == "delivery" {
        qty_delivered(env, line)
    } else {
        env.get_f64("sale.order.line", line, "product_uom_qty")
    };
    base - qty_invoiced(env, line)
}

fn line_invoice_status(env: &Env, line: Id) -> &'static str {
    let order = env
        .get_i64("sale.order.line", line, "order_id")
        .unwrap_or(0);
    if env.get_str("sale.order", order, "state") != "sale" {
        return "no";
    }
    if qty_to_invoice(env, line) > 0.0 {
        "to invoice"
    } else if qty_invoiced(env, line) >= env.get_f64("sale.order.line", line, "product_uom_qty") {
        "invoiced"
    } else {
        "no"
    }
}

pub fn order_pickings(env: &Env, order: Id) -> Vec<Id> {
    let mut ids = env.find("stock.picking", "sale_id", &json!(order));
    env.sort_ids(
        "stock.picking",
        &mut ids,
        "priority desc, scheduled_date asc, id desc",
    )
    .ok();
    ids
}

fn order_invoices(env: &Env, order: Id) -> Vec<Id> {
    let lines = order_lines(env, order);
    let mut moves: Vec<Id> = env
        .db
        .table("account.move.line")
        .map(|t| {
            t.rows
                .values()
                .filter(|r| {
                    r.get("sale_line_id")
                        .and_then(Value::as_i64)
                        .is_some_and(|l| lines.contains(&l))
                })
                .filter_map(|r| r.get("move_id").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    moves.sort_unstable();
    moves.dedup();
    moves
}

pub struct SaleOrder;

impl Behaviour for SaleOrder {
    fn defaults(&self, env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if !vals.contains_key("name") {
            let name = next_name(env, "sale.order", "S", 5);
            vals.insert("name".into(), json!(name));
        }
        vals.entry("state").or_insert(json!("draft"));
        vals.entry("date_order")
            .or_insert(json!(crate::orm::datetime_out(&env.now)));
        vals.entry("currency_id").or_insert(json!(1));
        vals.entry("company_id").or_insert(json!(1));
        vals.entry("warehouse_id").or_insert(json!(1));
        vals.entry("user_id").or_insert(json!(env.uid));
        if !vals.contains_key("partner_id") {
            return Err(Exc::validation(
                "The operation cannot be completed: Missing required value for the field 'Customer' (partner_id).\nModel: Sales Order (sale.order)\nField: Customer (partner_id)",
            ));
        }
        Ok(())
    }

    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        let untaxed: f64 = order_lines(env, id)
            .into_iter()
            .map(|l| line_subtotal(env, l))
            .sum();
        let state = env.get_str("sale.order", id, "state");
        Some(Ok(match field {
            "amount_untaxed" => json!(round2(untaxed)),
            "amount_tax" => json!(round2(untaxed * TAX_RATE)),
            "amount_total" => json!(round2(untaxed * (1.0 + TAX_RATE))),
            "picking_ids" => json!(order_pickings(env, id)),
            "invoice_ids" => json!(order_invoices(env, id)),
            "invoice_count" => json!(order_invoices(env, id).len()),
            "delivery_status" => {
                let pickings: Vec<Id> = order_pickings(env, id)
                    .into_iter()
                    .filter(|p| env.get_str("stock.picking", *p, "state") != "cancel")
                    .collect();
                let done = pickings
                    .iter()
                    .filter(|p| env.get_str("stock.picking", **p, "state") == "done")
                    .count();
                if pickings.is_empty() || state == "cancel" {
                    json!(false)
                } else if done == pickings.len() {
                    json!("full")
                } else if done > 0 {
                    json!("partial")
                } else {
                    json!("pending")
                }
            }
            "invoice_status" => {
                let statuses: Vec<&str> = order_lines(env, id)
                    .into_iter()
                    .map(|l| line_invoice_status(env, l))
                    .collect();
                json!(if state != "sale" {
                    "no"
                } else if statuses.contains(&"to invoice") {
                    "to invoice"
                } else if !statuses.is_empty() && statuses.iter().all(|s| *s == "invoiced") {
                    "invoiced"
                } else {
                    "no"
                })
            }
            _ => return None,
        }))
    }

    fn before_unlink(&self, env: &mut Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            if matches!(
                env.get_str("sale.order", id, "state").as_str(),
                "sale" | "sent"
            ) {
                return Err(Exc::user(
                    "You can not delete a sent quotation or a confirmed sales order. You must first cancel it.",
                ));
            }
        }
        Ok(())
    }

    fn call(
        &self,
        env: &mut Env,
        method: &str,
        ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        Some(match method {
            "action_confirm" => confirm(env, &ids),
            "action_cancel" => cancel(env, &ids),
            "action_draft" => ids
                .iter()
                .try_for_each(|id| set_state(env, *id, "draft"))
                .map(|_| json!(true)),
            "check_access_rights" => Ok(json!(true)),
            // Every default the model has (business::default_get picks the asked ones);
            // currency_id is related to the pricelist/company, not a default.
            "default_get" => Ok(
                json!({"state": "draft", "company_id": 1, "user_id": env.uid, "date_order": crate::orm::datetime_out(&env.now)}),
            ),
            _ => return None,
        })
    }
}

fn set_state(env: &mut Env, id: Id, state: &str) -> OResult<()> {
    env.put("sale.order", id, "state", json!(state));
    crate::webhooks::on_change(env, "sale.order", &[id], &["state".into()], false)
}

fn confirm(env: &mut Env, ids: &[Id]) -> OResult<Value> {
    for &id in ids {
        if !matches!(
            env.get_str("sale.order", id, "state").as_str(),
            "draft" | "sent"
        ) {
            return Err(Exc::user(
                "Some orders are not in a state requiring confirmation.",
            ));
        }
    }
    for &id in ids {
        set_state(env, id, "sale")?;
        crate::stock::create_delivery(env, id)?;
    }
    Ok(json!(true))
}

fn cancel(env: &mut Env, ids: &[Id]) -> OResult<Value> {
    let confirmed: Vec<Id> = ids
        .iter()
        .copied()
        .filter(|i| env.get_str("sale.order", *i, "state") == "sale")
        .collect();
    if let Some(&id) = confirmed.first() {
        return Ok(
            json!({"name": "Cancel Sales Order", "view_mode": "form", "res_model": "sale.order.cancel", "view_id": 1244,
            "type": "ir.actions.act_window", "context": {"default_template_id": 14, "default_order_id": id, "mark_so_as_canceled": true,
            "default_email_layout_xmlid": "mail.mail_notification_layout_with_responsible_signature", "model_description": "Sales Order"}, "target": "new"}),
        );
    }
    for &id in ids {
        cancel_order(env, id)?;
    }
    Ok(json!(true))
}

fn cancel_order(env: &mut Env, id: Id) -> OResult<()> {
    for p in order_pickings(env, id) {
        if env.get_str("stock.picking", p, "state") != "done" {
            env.put("stock.picking", p, "state", json!("cancel"));
            for m in env.o2m_ids("stock.move", "picking_id", p) {
                env.put("stock.move", m, "state", json!("cancel"));
            }
        }
    }
    set_state(env, id, "cancel")
}

pub struct SaleLine;

impl Behaviour for SaleLine {
    fn defaults(&self, env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if let Some(p) = vals.get("product_id").and_then(Value::as_i64) {
            if !vals.contains_key("price_unit") {
                vals.insert(
                    "price_unit".into(),
                    json!(env.get_f64("product.product", p, "list_price")),
                );
            }
            if !vals.contains_key("name") {
                vals.insert(
                    "name".into(),
                    json!(env.display_name("product.product", p)?),
                );
            }
        }
        vals.entry("product_uom_qty").or_insert(json!(1.0));
        vals.entry("tax_id").or_insert(json!([[6, 0, [1]]]));
        Ok(())
    }

    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let order = env.get_i64("sale.order.line", id, "order_id").unwrap_or(0);
        Some(format!(
            "{} - {}",
            env.get_str("sale.order", order, "name"),
            env.get_str("sale.order.line", id, "name")
        ))
    }

    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        Some(Ok(match field {
            "price_subtotal" => json!(line_subtotal(env, id)),
            "price_total" => json!(round2(line_subtotal(env, id) * (1.0 + TAX_RATE))),
            "qty_delivered" => json!(qty_delivered(env, id)),
            "qty_invoiced" => json!(qty_invoiced(env, id)),
            "qty_to_invoice" => json!(qty_to_invoice(env, id)),
            "invoice_status" => json!(line_invoice_status(env, id)),
            "state" => {
                let order = env.get_i64("sale.order.line", id, "order_id").unwrap_or(0);
                json!(env.get_str("sale.order", order, "state"))
            }
            _ => return None,
        }))
    }

    fn check(&self, env: &Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            let order = env.get_i64("sale.order.line", id, "order_id").unwrap_or(0);
            if env.get_str("sale.order", order, "state") == "sale"
                && !env.db.exists("sale.order.line", id)
            {
                return Err(Exc::user("Set the quantity to 0 instead."));
            }
        }
        Ok(())
    }

    fn before_unlink(&self, env: &mut Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            let order = env.get_i64("sale.order.line", id, "order_id").unwrap_or(0);
            if env.get_str("sale.order", order, "state") == "sale" {
                return Err(Exc::user(
                    "Once a sales order is confirmed, you can't remove one of its lines (we need to track if something gets invoiced or delivered).\n                Set the quantity to 0 instead.",
                ));
            }
        }
        Ok(())
    }
}

pub struct CancelWizard;

impl Behaviour for CancelWizard {
    fn defaults(&self, env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if let Some(o) = env.ctx.get("default_order_id").cloned() {
            vals.entry("order_id").or_insert(o);
        }
        Ok(())
    }
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        (method == "action_cancel").then(|| {
            for id in ids {
                if let Some(order) = env.get_i64("sale.order.cancel", id, "order_id") {
                    cancel_order(env, order)?;
                }
            }
            Ok(json!(true))
        })
    }
}

pub struct InvoiceWizard;

impl Behaviour for InvoiceWizard {
    fn defaults(&self, env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if let Some(ids) = env.ctx.get("active_ids").cloned() {
            vals.entry("sale_order_ids").or_insert(json!([[6, 0, ids]]));
        }
        Ok(())
    }

    fn call(
        &self,
        env: &mut Env,
        method: &str,
        ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        (method == "create_invoices").then(|| {
            let wizard = *ids
                .first()
                .ok_or_else(|| Exc::value("Expected singleton: sale.advance.payment.inv()"))?;
            let rec = env
                .db
                .get("sale.advance.payment.inv", wizard)
                .cloned()
                .unwrap_or_default();
            let orders = env.m2m_ids(&rec, "sale_order_ids");
            let mut last = None;
            for order in &orders {
                last = Some(create_invoice(env, *order)?);
            }
            let order = orders.first().copied().unwrap_or(0);
            let partner = env.get_i64("sale.order", order, "partner_id");
            let mut action: Value = serde_json::from_str(include_str!("invoice_action.json"))
                .expect("invoice action template");
            action["res_id"] = json!(last);
            action["context"]["default_partner_id"] = json!(partner);
            action["context"]["default_partner_shipping_id"] = json!(partner);
            action["context"]["default_invoice_origin"] =
                json!(env.get_str("sale.order", order, "name"));
            Ok(action)
        })
    }
}

fn create_invoice(env: &mut Env, order: Id) -> OResult<Id> {
    let lines: Vec<(Id, f64)> = order_lines(env, order)
        .into_iter()
        .map(|l| (l, qty_to_invoice(env, l)))
        .filter(|(_, q)| *q > 0.0)
        .collect();
    if lines.is_empty() {
        return Err(Exc::user(
            "There is no invoiceable line. If a product has a Delivered quantities invoicing policy, please make sure that a quantity has been delivered.",
        ));
    }
    let today = env.now[..10].to_string();
    let mv = env.insert("account.move", json!({
        "state": "draft", "move_type": "out_invoice", "partner_id": env.get("sale.order", order, "partner_id"),
        "invoice_date_due": today, "invoice_origin": env.get_str("sale.order", order, "name"), "currency_id": 1,
        "payment_state": "not_paid", "amount_paid": 0.0,
    }));
    for (line, qty) in lines {
        env.insert("account.move.line", json!({
            "move_id": mv, "name": env.get_str("sale.order.line", line, "name"),
            "product_id": env.get("sale.order.line", line, "product_id"), "quantity": qty,
            "price_unit": env.get_f64("sale.order.line", line, "price_unit"), "sale_line_id": line,
        }));
    }
    Ok(mv)
}

fn invoice_untaxed(env: &Env, mv: Id) -> f64 {
    env.o2m_ids("account.move.line", "move_id", mv)
        .into_iter()
        .map(|l| {
            env.get_f64("account.move.line", l, "quantity")
                * env.get_f64("account.move.line", l, "price_unit")
        })
        .sum()
}

pub struct Invoice;

impl Behaviour for Invoice {
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        let untaxed = round2(invoice_untaxed(env, id));
        let total = round2(untaxed * (1.0 + TAX_RATE));
        Some(Ok(match field {
            "amount_untaxed" => json!(untaxed),
            "amount_tax" => json!(round2(total - untaxed)),
            "amount_total" => json!(total),
            "amount_residual" => json!(round2(
                total - env.get_f64("account.move", id, "amount_paid")
            )),
            _ => return None,
        }))
    }

    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let name = env.get_str("account.move", id, "name");
        Some(if name.is_empty() {
            "Draft Invoice".into()
        } else {
            name
        })
    }

    fn call(
        &self,
        env: &mut Env,
        method: &str,
        ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        (method == "action_post").then(|| {
            for &id in &ids {
                if env.get_str("account.move", id, "state") != "draft" {
                    let name = env.get_str("account.move", id, "name");
                    return Err(Exc::user(format!(
                        "The entry {name} (id {id}) must be in draft."
                    )));
                }
            }
            for id in ids {
                let date = match env.get("account.move", id, "invoice_date") {
                    Value::String(d) => d,
                    _ => env.now[..10].to_string(),
                };
                let year = date[..4].to_string();
                let name = next_name(
                    env,
                    &format!("account.move.{year}"),
                    &format!("INV/{year}/"),
                    5,
                );
                env.put("account.move", id, "invoice_date", json!(date));
                env.put("account.move", id, "date", json!(date));
                env.put("account.move", id, "name", json!(name));
                env.put("account.move", id, "state", json!("posted"));
            }
            // action_post returns False in Odoo 18 (05_28).
            Ok(json!(false))
        })
    }
}

pub struct InvoiceLine;

impl Behaviour for InvoiceLine {
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        (field == "price_subtotal").then(|| {
            Ok(json!(round2(
                env.get_f64("account.move.line", id, "quantity")
                    * env.get_f64("account.move.line", id, "price_unit")
            )))
        })
    }
}

pub struct PaymentWizard;

impl Behaviour for PaymentWizard {
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        _ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        (method == "action_create_payments").then(|| {
            let moves: Vec<Id> = env
                .ctx
                .get("active_ids")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            let mut payment = 0;
            for mv in moves {
                if env.get_str("account.move", mv, "state") != "posted" {
                    return Err(Exc::user("You can only register payment for posted journal entries."));
                }
                let total = round2(invoice_untaxed(env, mv) * (1.0 + TAX_RATE));
                payment = env.insert("account.payment", json!({"amount": total, "partner_id": env.get("account.move", mv, "partner_id"), "state": "paid"}));
                env.put("account.move", mv, "amount_paid", json!(total));
                env.put("account.move", mv, "payment_state", json!("paid"));
            }
            Ok(json!({"name": "Payments", "type": "ir.actions.act_window", "res_model": "account.payment", "context": {"create": false}, "view_mode": "form", "res_id": payment}))
        })
    }
}
