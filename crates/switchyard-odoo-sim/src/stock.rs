//! Stock: quants and inventory, delivery orders from confirmed sales, validation with the
//! backorder and SMS wizards (Odoo 18's `quantity` + `picked`), manufacturing orders.

use crate::business::next_name;
use crate::exc::{Exc, OResult};
use crate::orm::*;
use crate::registry::{Behaviour, Env};
use serde_json::{Map, Value, json};

const STOCK: Id = 8;
const CUSTOMERS: Id = 5;
const PRODUCTION: Id = 9;
/// Virtual Locations/Inventory adjustment.
const INVENTORY_LOSS: Id = 6;

/// On-hand quantity of a product in internal locations.
pub fn on_hand(env: &Env, product: Id) -> f64 {
    env.find("stock.quant", "product_id", &json!(product))
        .into_iter()
        .filter(|q| {
            let loc = env.get_i64("stock.quant", *q, "location_id").unwrap_or(0);
            env.get_str("stock.location", loc, "usage") == "internal"
        })
        .map(|q| env.get_f64("stock.quant", q, "quantity"))
        .sum()
}

fn add_stock(env: &mut Env, product: Id, location: Id, delta: f64) {
    let existing = env
        .find("stock.quant", "product_id", &json!(product))
        .into_iter()
        .find(|q| env.get_i64("stock.quant", *q, "location_id") == Some(location));
    match existing {
        Some(q) => {
            let v = env.get_f64("stock.quant", q, "quantity") + delta;
            env.put("stock.quant", q, "quantity", json!(v));
        }
        None => {
            env.insert(
                "stock.quant",
                json!({"product_id": product, "location_id": location, "quantity": delta}),
            );
        }
    }
}

pub struct Quant;

fn inventory_mode(env: &Env) -> bool {
    env.ctx.get("inventory_mode") == Some(&json!(true))
}

impl Behaviour for Quant {
    fn create_existing(&self, env: &mut Env, vals: &Map<String, Value>) -> OResult<Option<Id>> {
        // Odoo: in inventory mode, counting a product where a quant already exists sets
        // the count on that quant (same product, location and lot) and returns it.
        if !inventory_mode(env) || !vals.contains_key("inventory_quantity") {
            return Ok(None);
        }
        let key = |k: &str| vals.get(k).and_then(Value::as_i64);
        let existing = env
            .find("stock.quant", "product_id", &json!(key("product_id")))
            .into_iter()
            .find(|q| {
                env.get_i64("stock.quant", *q, "location_id") == key("location_id")
                    && env.get_i64("stock.quant", *q, "lot_id") == key("lot_id")
            });
        let Some(q) = existing else {
            return Ok(None);
        };
        let counted = vals.get("inventory_quantity").and_then(Value::as_f64);
        env.put("stock.quant", q, "inventory_quantity", json!(counted));
        env.put("stock.quant", q, "inventory_quantity_set", json!(true));
        Ok(Some(q))
    }

    fn defaults(&self, _env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if vals.contains_key("inventory_quantity") {
            vals.insert("inventory_quantity_set".into(), json!(true));
        }
        vals.entry("quantity").or_insert(json!(0.0));
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
        (method == "action_apply_inventory").then(|| {
            for q in ids {
                let target = env.get_f64("stock.quant", q, "inventory_quantity");
                let delta = target - env.get_f64("stock.quant", q, "quantity");
                let product = env.get_i64("stock.quant", q, "product_id").unwrap_or(0);
                let location = env.get_i64("stock.quant", q, "location_id").unwrap_or(STOCK);
                // The adjustment is a done move from (or to) the inventory-loss location;
                // it takes a stock.move id like any other move (05_12 reads move 2).
                if delta != 0.0 {
                    let (from, to) = if delta > 0.0 {
                        (INVENTORY_LOSS, location)
                    } else {
                        (location, INVENTORY_LOSS)
                    };
                    let mv = env.insert("stock.move", json!({
                        "name": "Product Quantity Updated", "product_id": product, "product_uom_qty": delta.abs(),
                        "quantity": delta.abs(), "picked": true, "state": "done", "location_id": from,
                        "location_dest_id": to, "is_inventory": true,
                    }));
                    env.insert(
                        "stock.move.line",
                        json!({"move_id": mv, "product_id": product, "quantity": delta.abs(), "picked": true}),
                    );
                    add_stock(env, product, INVENTORY_LOSS, -delta);
                }
                env.put("stock.quant", q, "quantity", json!(target));
                env.put("stock.quant", q, "inventory_quantity", json!(0.0));
                env.put("stock.quant", q, "inventory_quantity_set", json!(false));
            }
            // Returns None: JSON-RPC omits "result", XML-RPC faults after commit (05_04, 08_12).
            Ok(Value::Null)
        })
    }
}

/// The delivery order of a confirmed sale (state assigned when stock covers it).
pub fn create_delivery(env: &mut Env, order: Id) -> OResult<()> {
    let lines = crate::sale::order_lines(env, order);
    let storable: Vec<Id> = lines
        .into_iter()
        .filter(|l| {
            let p = env
                .get_i64("sale.order.line", *l, "product_id")
                .unwrap_or(0);
            env.get_str("product.product", p, "type") == "consu"
        })
        .collect();
    if storable.is_empty() {
        return Ok(());
    }
    let so_name = env.get_str("sale.order", order, "name");
    let reference = env.get_str("sale.order", order, "client_order_ref");
    let origin = if reference.is_empty() {
        so_name
    } else {
        format!("{so_name} - {reference}")
    };
    let name = next_name(env, "stock.picking.out", "WH/OUT/", 5);
    let now = datetime_out(&env.now);
    let picking = env.insert("stock.picking", json!({
        "name": name, "origin": origin, "state": "assigned", "picking_type_id": 2, "location_id": STOCK,
        "location_dest_id": CUSTOMERS, "partner_id": env.get("sale.order", order, "partner_id"),
        "scheduled_date": now, "sale_id": order, "priority": "0",
    }));
    let mut all_available = true;
    for line in storable {
        let product = env
            .get_i64("sale.order.line", line, "product_id")
            .unwrap_or(0);
        let qty = env.get_f64("sale.order.line", line, "product_uom_qty");
        let reserved = qty.min(on_hand(env, product).max(0.0));
        all_available &= reserved >= qty;
        let mv = env.insert("stock.move", json!({
            "name": env.get_str("sale.order.line", line, "name"), "product_id": product, "product_uom_qty": qty,
            "quantity": reserved, "picked": false, "state": if reserved >= qty { "assigned" } else { "confirmed" },
            "picking_id": picking, "location_id": STOCK, "location_dest_id": CUSTOMERS, "sale_line_id": line,
        }));
        env.insert(
            "stock.move.line",
            json!({"move_id": mv, "product_id": product, "quantity": reserved}),
        );
    }
    if !all_available {
        env.put("stock.picking", picking, "state", json!("confirmed"));
    }
    Ok(())
}

pub struct Picking;

fn moves(env: &Env, picking: Id) -> Vec<Id> {
    env.o2m_ids("stock.move", "picking_id", picking)
}

fn backorder_action(ids: &[Id]) -> Value {
    json!({"name": "Create Backorder?", "type": "ir.actions.act_window", "view_mode": "form",
        "res_model": "stock.backorder.confirmation", "views": [[897, "form"]], "view_id": 897, "target": "new",
        "context": {"button_validate_picking_ids": ids, "default_show_transfers": false,
            "default_pick_ids": ids.iter().map(|i| json!([4, i])).collect::<Vec<_>>()}})
}

/// `button_validate`: wizards first (backorder, SMS), then the transfer.
pub fn validate(env: &mut Env, ids: &[Id]) -> OResult<Value> {
    for &p in ids {
        let ms = moves(env, p);
        let reserved: f64 = ms
            .iter()
            .map(|m| env.get_f64("stock.move", *m, "quantity"))
            .sum();
        if env.get_str("stock.picking", p, "state") == "done" || reserved <= 0.0 {
            return Err(Exc::user(
                "You cannot validate a transfer if no quantities are reserved. To force the transfer, encode quantities.",
            ));
        }
        // Nothing marked picked: everything reserved is picked.
        if !ms
            .iter()
            .any(|m| env.get("stock.move", *m, "picked") == json!(true))
        {
            for m in &ms {
                env.put("stock.move", *m, "picked", json!(true));
            }
        }
    }
    let needs_backorder = ids.iter().any(|p| {
        moves(env, *p).iter().any(|m| {
            env.get("stock.move", *m, "picked") == json!(true)
                && env.get_f64("stock.move", *m, "quantity")
                    < env.get_f64("stock.move", *m, "product_uom_qty")
        })
    });
    let ctx_flag = |env: &Env, k: &str| env.ctx.get(k).is_some_and(|v| *v == json!(true));
    if needs_backorder && !ctx_flag(env, "skip_backorder") {
        return Ok(backorder_action(ids));
    }
    let sms_on = env.get("res.company", 1, "sale_stock_sms_confirmation") == json!(true);
    let has_phone = ids.iter().any(|p| {
        let partner = env.get_i64("stock.picking", *p, "partner_id").unwrap_or(0);
        !env.get_str("res.partner", partner, "phone").is_empty()
            || !env.get_str("res.partner", partner, "mobile").is_empty()
    });
    if sms_on && has_phone && !ctx_flag(env, "skip_sms") {
        let wizard = env.insert("confirm.stock.sms", json!({"pick_ids": ids}));
        let mut ctx = env.ctx.clone();
        ctx.insert("button_validate_picking_ids".into(), json!(ids));
        return Ok(
            json!({"name": "SMS", "type": "ir.actions.act_window", "view_mode": "form", "res_model": "confirm.stock.sms",
            "views": [[1214, "form"]], "view_id": 1214, "target": "new", "res_id": wizard, "context": Value::Object(ctx)}),
        );
    }
    let create_backorders = !ctx_flag(env, "cancel_backorder");
    for &p in ids {
        done(env, p, create_backorders)?;
    }
    Ok(json!(true))
}

fn done(env: &mut Env, picking: Id, create_backorder: bool) -> OResult<()> {
    let mut remainder = Vec::new();
    for m in moves(env, picking) {
        let product = env.get_i64("stock.move", m, "product_id").unwrap_or(0);
        let qty = env.get_f64("stock.move", m, "quantity");
        let demand = env.get_f64("stock.move", m, "product_uom_qty");
        add_stock(env, product, STOCK, -qty);
        add_stock(env, product, CUSTOMERS, qty);
        env.put("stock.move", m, "state", json!("done"));
        if qty < demand {
            remainder.push((m, product, demand - qty));
        }
    }
    env.put("stock.picking", picking, "state", json!("done"));
    env.put(
        "stock.picking",
        picking,
        "date_done",
        json!(env.now.clone()),
    );
    if create_backorder && !remainder.is_empty() {
        let name = next_name(env, "stock.picking.out", "WH/OUT/", 5);
        let rec = env
            .db
            .get("stock.picking", picking)
            .cloned()
            .unwrap_or_default();
        let bo = env.insert("stock.picking", json!({
            "name": name, "origin": rec.get("origin"), "state": "assigned", "picking_type_id": rec.get("picking_type_id"),
            "location_id": STOCK, "location_dest_id": CUSTOMERS, "partner_id": rec.get("partner_id"),
            "scheduled_date": rec.get("scheduled_date"), "sale_id": rec.get("sale_id"), "backorder_id": picking, "priority": "0",
        }));
        for (m, product, qty) in remainder {
            let reserved = qty.min(on_hand(env, product).max(0.0));
            let nm = env.insert("stock.move", json!({
                "name": env.get_str("stock.move", m, "name"), "product_id": product, "product_uom_qty": qty, "quantity": reserved,
                "picked": false, "state": "assigned", "picking_id": bo, "location_id": STOCK, "location_dest_id": CUSTOMERS,
                "sale_line_id": env.get("stock.move", m, "sale_line_id"),
            }));
            env.insert(
                "stock.move.line",
                json!({"move_id": nm, "product_id": product, "quantity": reserved}),
            );
            let demand = env.get_f64("stock.move", m, "quantity");
            env.put("stock.move", m, "product_uom_qty", json!(demand));
        }
    }
    Ok(())
}

impl Behaviour for Picking {
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        Some(match method {
            "button_validate" => validate(env, &ids),
            "action_assign" => Ok(json!(true)),
            "action_cancel" => {
                for p in ids {
                    env.put("stock.picking", p, "state", json!("cancel"));
                }
                Ok(json!(true))
            }
            _ => return None,
        })
    }
}

fn ctx_picking_ids(env: &Env) -> Vec<Id> {
    env.ctx
        .get("button_validate_picking_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

pub struct BackorderWizard;

impl Behaviour for BackorderWizard {
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        _ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        let pickings = ctx_picking_ids(env);
        match method {
            "process" => {
                env.ctx.insert("skip_backorder".into(), json!(true));
                Some(validate(env, &pickings))
            }
            "process_cancel_backorder" => {
                env.ctx.insert("skip_backorder".into(), json!(true));
                env.ctx.insert("cancel_backorder".into(), json!(true));
                Some(validate(env, &pickings))
            }
            _ => None,
        }
    }
}

pub struct SmsWizard;

impl Behaviour for SmsWizard {
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        _ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        if method != "dont_send_sms" && method != "send_sms" {
            return None;
        }
        if method == "dont_send_sms" {
            env.put(
                "res.company",
                1,
                "sale_stock_sms_confirmation",
                json!(false),
            );
        }
        env.ctx.insert("skip_sms".into(), json!(true));
        let pickings = ctx_picking_ids(env);
        Some(validate(env, &pickings))
    }
}

pub struct Production;

/// Odoo 18 creates a manufacturing order's moves with the draft order: one per BoM
/// component and one for the finished product (07_04 reads them before confirmation).
fn production_moves(env: &mut Env, mo: Id) {
    let qty = env.get_f64("mrp.production", mo, "product_qty");
    let product = env.get_i64("mrp.production", mo, "product_id").unwrap_or(0);
    let name = env.get_str("mrp.production", mo, "name");
    if let Some(bom) = env.get_i64("mrp.production", mo, "bom_id") {
        let per = env.get_f64("mrp.bom", bom, "product_qty").max(1.0);
        for line in env.o2m_ids("mrp.bom.line", "bom_id", bom) {
            let comp = env.get_i64("mrp.bom.line", line, "product_id").unwrap_or(0);
            let need = env.get_f64("mrp.bom.line", line, "product_qty") * qty / per;
            env.insert("stock.move", json!({"name": name, "product_id": comp, "product_uom_qty": need,
                "quantity": 0.0, "picked": false, "state": "draft", "raw_material_production_id": mo,
                "location_id": STOCK, "location_dest_id": PRODUCTION}));
        }
    }
    env.insert(
        "stock.move",
        json!({"name": name, "product_id": product, "product_uom_qty": qty,
        "quantity": 0.0, "picked": false, "state": "draft", "production_id": mo,
        "location_id": PRODUCTION, "location_dest_id": STOCK}),
    );
}

/// `button_mark_done`: consume the components, produce the product (all of it when
/// `qty_producing` is 0, 07_08), no wizard.
fn mark_done(env: &mut Env, mo: Id) {
    let mut qty = env.get_f64("mrp.production", mo, "qty_producing");
    if qty <= 0.0 {
        qty = env.get_f64("mrp.production", mo, "product_qty");
    }
    for m in env.o2m_ids("stock.move", "raw_material_production_id", mo) {
        let product = env.get_i64("stock.move", m, "product_id").unwrap_or(0);
        let need = env.get_f64("stock.move", m, "product_uom_qty");
        add_stock(env, product, STOCK, -need);
        add_stock(env, product, PRODUCTION, need);
        env.put("stock.move", m, "quantity", json!(need));
        env.put("stock.move", m, "picked", json!(true));
        env.put("stock.move", m, "state", json!("done"));
    }
    for m in env.o2m_ids("stock.move", "production_id", mo) {
        let product = env.get_i64("stock.move", m, "product_id").unwrap_or(0);
        add_stock(env, product, PRODUCTION, -qty);
        add_stock(env, product, STOCK, qty);
        env.put("stock.move", m, "quantity", json!(qty));
        env.put("stock.move", m, "picked", json!(true));
        env.put("stock.move", m, "state", json!("done"));
    }
    let now = datetime_out(&env.now);
    env.put("mrp.production", mo, "qty_producing", json!(qty));
    env.put("mrp.production", mo, "state", json!("done"));
    env.put("mrp.production", mo, "reservation_state", Value::Null);
    env.put("mrp.production", mo, "date_finished", json!(now));
}

impl Behaviour for Production {
    fn defaults(&self, env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        if !vals.contains_key("name") {
            let name = next_name(env, "mrp.production", "WH/MO/", 5);
            vals.insert("name".into(), json!(name));
        }
        vals.entry("state").or_insert(json!("draft"));
        vals.entry("product_qty").or_insert(json!(1.0));
        vals.entry("qty_producing").or_insert(json!(0.0));
        let start =
            chrono::NaiveDateTime::parse_from_str(&datetime_out(&env.now), "%Y-%m-%d %H:%M:%S")
                .map_err(|e| Exc::value(e.to_string()))?;
        vals.entry("date_start")
            .or_insert(json!(start.format("%Y-%m-%d %H:%M:%S").to_string()));
        // Planned end: start plus the default one-hour duration.
        vals.entry("date_finished").or_insert(json!(
            (start + chrono::Duration::hours(1))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        ));
        if !vals.contains_key("bom_id") {
            let product = vals.get("product_id").and_then(Value::as_i64).unwrap_or(0);
            let tmpl = env.get_i64("product.product", product, "product_tmpl_id");
            let bom = env
                .find("mrp.bom", "product_id", &json!(product))
                .into_iter()
                .chain(env.find("mrp.bom", "product_tmpl_id", &json!(tmpl)))
                .find(|b| env.get("mrp.bom", *b, "active") != json!(false));
            if let Some(b) = bom {
                vals.insert("bom_id".into(), json!(b));
            }
        }
        Ok(())
    }

    fn after_create(&self, env: &mut Env, id: Id) -> OResult<()> {
        production_moves(env, id);
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
            "action_confirm" => {
                for mo in ids {
                    if env.get_str("mrp.production", mo, "state") != "draft" {
                        continue;
                    }
                    let mut all = true;
                    for m in env.o2m_ids("stock.move", "raw_material_production_id", mo) {
                        let comp = env.get_i64("stock.move", m, "product_id").unwrap_or(0);
                        let need = env.get_f64("stock.move", m, "product_uom_qty");
                        let reserved = need.min(on_hand(env, comp).max(0.0));
                        all &= reserved >= need;
                        env.put("stock.move", m, "quantity", json!(reserved));
                        let state = if reserved >= need {
                            "assigned"
                        } else {
                            "confirmed"
                        };
                        env.put("stock.move", m, "state", json!(state));
                    }
                    for m in env.o2m_ids("stock.move", "production_id", mo) {
                        env.put("stock.move", m, "state", json!("confirmed"));
                    }
                    let reservation = if all { "assigned" } else { "confirmed" };
                    env.put(
                        "mrp.production",
                        mo,
                        "reservation_state",
                        json!(reservation),
                    );
                    env.put("mrp.production", mo, "state", json!("confirmed"));
                }
                Ok(json!(true))
            }
            "button_mark_done" => {
                for mo in ids {
                    mark_done(env, mo);
                }
                Ok(json!(true))
            }
            _ => return None,
        })
    }
}
