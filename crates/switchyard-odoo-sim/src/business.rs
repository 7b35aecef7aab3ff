//! Sales, stock, invoicing, manufacturing and automation models: fields, seed data (the
//! warehouse and locations of a fresh database) and the business methods the recordings
//! exercise (group 05 order-to-cash, 07 MRP, 08 UserErrors).

use crate::exc::{Exc, OResult};
use crate::models::model;
use crate::orm::FieldType::*;
use crate::orm::*;
use crate::registry::{Behaviour, Env, Plain, Registry};
use serde_json::{Map, Value, json};

fn f(name: &'static str, ty: FieldType) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: false,
        string: name,
    }
}

fn fs(name: &'static str, ty: FieldType, string: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: false,
        string,
    }
}

pub fn register(r: &mut Registry) {
    r.add(
        model(
            "product.category",
            "Product Category",
            vec![f("name", Char)],
        ),
        Box::new(Plain),
    );
    r.add(
        model("uom.uom", "Product Unit of Measure", vec![f("name", Char)]),
        Box::new(Plain),
    );
    let product_fields = || {
        vec![
            f("name", Char),
            f("default_code", Char),
            f("active", Boolean),
            fs(
                "type",
                Selection(vec!["consu", "service", "combo"]),
                "Product Type",
            ),
            f("is_storable", Boolean),
            fs("list_price", Float, "Sales Price"),
            f("standard_price", Float),
            f("invoice_policy", Selection(vec!["order", "delivery"])),
            f("categ_id", Many2one("product.category")),
            f("uom_id", Many2one("uom.uom")),
            f("barcode", Char),
            f("weight", Float),
            f("description_sale", Text),
            f("qty_available", Computed),
            f("virtual_available", Computed),
        ]
    };
    let mut tmpl = model("product.template", "Product", product_fields());
    tmpl.order = "name";
    r.add(tmpl, Box::new(Product));
    let mut product = model("product.product", "Product Variant", product_fields());
    product
        .fields
        .push(f("product_tmpl_id", Many2one("product.template")));
    product.order = "default_code, name, id";
    r.add(product, Box::new(Product));
    r.add(
        model(
            "stock.location",
            "Inventory Locations",
            vec![
                f("name", Char),
                f("complete_name", Char),
                f(
                    "usage",
                    Selection(vec![
                        "view",
                        "internal",
                        "customer",
                        "supplier",
                        "inventory",
                        "production",
                        "transit",
                    ]),
                ),
                f("location_id", Many2one("stock.location")),
                f("active", Boolean),
            ],
        ),
        Box::new(Location),
    );
    r.add(
        model(
            "stock.picking.type",
            "Picking Type",
            vec![
                f("name", Char),
                f(
                    "code",
                    Selection(vec!["incoming", "outgoing", "internal", "mrp_operation"]),
                ),
                f("sequence_code", Char),
                f("warehouse_id", Many2one("stock.warehouse")),
                f("default_location_src_id", Many2one("stock.location")),
                f("default_location_dest_id", Many2one("stock.location")),
            ],
        ),
        Box::new(PickingType),
    );
    r.add(
        model(
            "stock.warehouse",
            "Warehouse",
            vec![
                f("name", Char),
                f("code", Char),
                f("lot_stock_id", Many2one("stock.location")),
                f("out_type_id", Many2one("stock.picking.type")),
                f("in_type_id", Many2one("stock.picking.type")),
                f("company_id", Many2one("res.company")),
                f("active", Boolean),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "stock.lot",
            "Lot/Serial",
            vec![
                f("name", Char),
                f("product_id", Many2one("product.product")),
                f("company_id", Many2one("res.company")),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "stock.quant",
            "Quants",
            vec![
                f("product_id", Many2one("product.product")),
                f("location_id", Many2one("stock.location")),
                f("lot_id", Many2one("stock.lot")),
                f("quantity", Float),
                f("reserved_quantity", Float),
                f("inventory_quantity", Float),
                f("inventory_quantity_set", Boolean),
            ],
        ),
        Box::new(crate::stock::Quant),
    );
    let mut picking = model(
        "stock.picking",
        "Transfer",
        vec![
            f("name", Char),
            f("origin", Char),
            f(
                "state",
                Selection(vec![
                    "draft",
                    "waiting",
                    "confirmed",
                    "assigned",
                    "done",
                    "cancel",
                ]),
            ),
            f("picking_type_id", Many2one("stock.picking.type")),
            f("location_id", Many2one("stock.location")),
            f("location_dest_id", Many2one("stock.location")),
            f("partner_id", Many2one("res.partner")),
            f("move_ids", One2many("stock.move", "picking_id")),
            f("scheduled_date", Datetime),
            f("date_done", Datetime),
            f("backorder_id", Many2one("stock.picking")),
            f("sale_id", Many2one("sale.order")),
            f("note", Html),
            f("carrier_tracking_ref", Char),
        ],
    );
    picking.order = "priority desc, scheduled_date asc, id desc";
    picking.fields.push(f("priority", Char));
    r.add(picking, Box::new(crate::stock::Picking));
    r.add(
        model(
            "stock.move",
            "Stock Move",
            vec![
                f("name", Char),
                f("product_id", Many2one("product.product")),
                f("product_uom_qty", Float),
                f("quantity", Float),
                f("picked", Boolean),
                f(
                    "state",
                    Selection(vec![
                        "draft",
                        "waiting",
                        "confirmed",
                        "partially_available",
                        "assigned",
                        "done",
                        "cancel",
                    ]),
                ),
                f("picking_id", Many2one("stock.picking")),
                f("location_id", Many2one("stock.location")),
                f("location_dest_id", Many2one("stock.location")),
                f("sale_line_id", Many2one("sale.order.line")),
                f("raw_material_production_id", Many2one("mrp.production")),
                f("production_id", Many2one("mrp.production")),
                f("move_line_ids", One2many("stock.move.line", "move_id")),
                f("is_inventory", Boolean),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "stock.move.line",
            "Product Moves",
            vec![
                f("move_id", Many2one("stock.move")),
                f("product_id", Many2one("product.product")),
                f("quantity", Float),
                f("lot_id", Many2one("stock.lot")),
                f("picked", Boolean),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "stock.backorder.confirmation",
            "Backorder Confirmation",
            vec![
                f("pick_ids", Many2many("stock.picking")),
                f("show_transfers", Boolean),
            ],
        ),
        Box::new(crate::stock::BackorderWizard),
    );
    r.add(
        model(
            "confirm.stock.sms",
            "Confirm Stock SMS",
            vec![f("pick_ids", Many2many("stock.picking"))],
        ),
        Box::new(crate::stock::SmsWizard),
    );
    r.add(
        model(
            "account.tax",
            "Tax",
            vec![f("name", Char), f("amount", Float), f("type_tax_use", Char)],
        ),
        Box::new(Plain),
    );
    let mut so = model(
        "sale.order",
        "Sales Order",
        vec![
            f("name", Char),
            f("partner_id", Many2one("res.partner")),
            f("client_order_ref", Char),
            f("origin", Char),
            f("state", Selection(vec!["draft", "sent", "sale", "cancel"])),
            f("date_order", Datetime),
            f("validity_date", Date),
            f("commitment_date", Datetime),
            f("note", Html),
            f("order_line", One2many("sale.order.line", "order_id")),
            f("currency_id", Many2one("res.currency")),
            f("company_id", Many2one("res.company")),
            f("warehouse_id", Many2one("stock.warehouse")),
            f("user_id", Many2one("res.users")),
            f("amount_untaxed", Computed),
            f("amount_tax", Computed),
            f("amount_total", Computed),
            f("picking_ids", Computed),
            f("invoice_ids", Computed),
            f("invoice_count", Computed),
            f("delivery_status", Computed),
            f("invoice_status", Computed),
        ],
    );
    so.order = "date_order desc, id desc";
    r.add(so, Box::new(crate::sale::SaleOrder));
    r.add(
        model(
            "sale.order.line",
            "Sales Order Line",
            vec![
                f("order_id", Many2one("sale.order")),
                f("name", Text),
                f("product_id", Many2one("product.product")),
                f("product_uom_qty", Float),
                f("price_unit", Float),
                f("discount", Float),
                f("sequence", Integer),
                f("price_subtotal", Computed),
                f("price_total", Computed),
                f("qty_delivered", Computed),
                f("qty_invoiced", Computed),
                f("qty_to_invoice", Computed),
                f("invoice_status", Computed),
                f("tax_id", Many2many("account.tax")),
                f("state", Computed),
            ],
        ),
        Box::new(crate::sale::SaleLine),
    );
    r.add(
        model(
            "sale.order.cancel",
            "Sales Order Cancel",
            vec![f("order_id", Many2one("sale.order"))],
        ),
        Box::new(crate::sale::CancelWizard),
    );
    r.add(
        model(
            "sale.advance.payment.inv",
            "Sales Advance Payment Invoice",
            vec![
                f(
                    "advance_payment_method",
                    Selection(vec!["delivered", "percentage", "fixed"]),
                ),
                f("sale_order_ids", Many2many("sale.order")),
            ],
        ),
        Box::new(crate::sale::InvoiceWizard),
    );
    r.add(
        model(
            "account.move",
            "Journal Entry",
            vec![
                f("name", Char),
                f("state", Selection(vec!["draft", "posted", "cancel"])),
                f(
                    "move_type",
                    Selection(vec![
                        "entry",
                        "out_invoice",
                        "out_refund",
                        "in_invoice",
                        "in_refund",
                    ]),
                ),
                f("partner_id", Many2one("res.partner")),
                f("invoice_date", Date),
                f("invoice_date_due", Date),
                f("date", Date),
                f("invoice_origin", Char),
                f("currency_id", Many2one("res.currency")),
                f("ref", Char),
                f("invoice_line_ids", One2many("account.move.line", "move_id")),
                f(
                    "payment_state",
                    Selection(vec![
                        "not_paid",
                        "in_payment",
                        "paid",
                        "partial",
                        "reversed",
                    ]),
                ),
                f("amount_untaxed", Computed),
                f("amount_tax", Computed),
                f("amount_total", Computed),
                f("amount_residual", Computed),
                f("amount_paid", Float),
            ],
        ),
        Box::new(crate::sale::Invoice),
    );
    r.add(
        model(
            "account.move.line",
            "Journal Item",
            vec![
                f("move_id", Many2one("account.move")),
                f("name", Char),
                f("product_id", Many2one("product.product")),
                f("quantity", Float),
                f("price_unit", Float),
                f("sale_line_id", Many2one("sale.order.line")),
                f("price_subtotal", Computed),
            ],
        ),
        Box::new(crate::sale::InvoiceLine),
    );
    r.add(
        model(
            "account.payment",
            "Payments",
            vec![
                f("name", Char),
                f("amount", Float),
                f("partner_id", Many2one("res.partner")),
                f("state", Char),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "account.payment.register",
            "Pay",
            vec![f("amount", Float), f("payment_date", Date)],
        ),
        Box::new(crate::sale::PaymentWizard),
    );
    r.add(
        model(
            "mrp.bom",
            "Bill of Material",
            vec![
                f("product_tmpl_id", Many2one("product.template")),
                f("product_id", Many2one("product.product")),
                f("product_qty", Float),
                f("bom_line_ids", One2many("mrp.bom.line", "bom_id")),
                f("type", Selection(vec!["normal", "phantom"])),
                f("active", Boolean),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "mrp.bom.line",
            "Bill of Material Line",
            vec![
                f("bom_id", Many2one("mrp.bom")),
                f("product_id", Many2one("product.product")),
                f("product_qty", Float),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "mrp.production",
            "Production Order",
            vec![
                f("name", Char),
                f("product_id", Many2one("product.product")),
                f("product_qty", Float),
                f("qty_producing", Float),
                f("bom_id", Many2one("mrp.bom")),
                f(
                    "state",
                    Selection(vec![
                        "draft",
                        "confirmed",
                        "progress",
                        "to_close",
                        "done",
                        "cancel",
                    ]),
                ),
                f(
                    "reservation_state",
                    Selection(vec!["confirmed", "assigned", "waiting"]),
                ),
                f("origin", Char),
                f(
                    "move_raw_ids",
                    One2many("stock.move", "raw_material_production_id"),
                ),
                f("move_finished_ids", One2many("stock.move", "production_id")),
                f("date_start", Datetime),
                f("date_finished", Datetime),
            ],
        ),
        Box::new(crate::stock::Production),
    );
    r.add(
        model(
            "ir.model",
            "Models",
            vec![f("name", Char), f("model", Char)],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "ir.model.fields",
            "Fields",
            vec![
                f("name", Char),
                f("model", Char),
                f("model_id", Many2one("ir.model")),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "ir.actions.server",
            "Server Action",
            vec![
                f("name", Char),
                f(
                    "state",
                    Selection(vec![
                        "code",
                        "object_create",
                        "object_write",
                        "multi",
                        "webhook",
                    ]),
                ),
                f("usage", Char),
                f("model_id", Many2one("ir.model")),
                f("model_name", Char),
                f("webhook_url", Char),
                f("webhook_field_ids", Many2many("ir.model.fields")),
                f("webhook_field_names", Computed),
                f("webhook_sample_payload", Computed),
                f("base_automation_id", Many2one("base.automation")),
                f("code", Text),
                f("sequence", Integer),
            ],
        ),
        Box::new(crate::automation::ServerAction),
    );
    r.add(
        model(
            "base.automation",
            "Automation Rule",
            vec![
                f("name", Char),
                f("model_id", Many2one("ir.model")),
                f("model_name", Computed),
                f("active", Boolean),
                f(
                    "trigger",
                    Selection(vec![
                        "on_create",
                        "on_write",
                        "on_create_or_write",
                        "on_unlink",
                        "on_change",
                        "on_time",
                    ]),
                ),
                f("trigger_field_ids", Many2many("ir.model.fields")),
                f("trigger_field_names", Computed),
                f(
                    "action_server_ids",
                    One2many("ir.actions.server", "base_automation_id"),
                ),
                f("filter_domain", Char),
                f("action_server_id", Computed),
            ],
        ),
        Box::new(crate::automation::Automation),
    );
}

/// A fresh database's stock set-up, with the ids the recordings show (WH/Stock = 8,
/// Partners/Customers = 5, delivery type 2).
pub fn seed(env: &mut Env) {
    env.insert("product.category", json!({"name": "All"}));
    env.insert("uom.uom", json!({"name": "Units"}));
    for (name, usage, parent) in [
        ("Physical Locations", "view", Value::Null),
        ("Partners", "view", Value::Null),
        ("Virtual Locations", "view", Value::Null),
        ("Vendors", "supplier", json!(2)),
        ("Customers", "customer", json!(2)),
        ("Inventory adjustment", "inventory", json!(3)),
        ("WH", "view", json!(1)),
        ("Stock", "internal", json!(7)),
        ("Production", "production", json!(3)),
    ] {
        env.insert(
            "stock.location",
            json!({"name": name, "usage": usage, "location_id": parent}),
        );
    }
    env.insert("stock.picking.type", json!({"name": "Receipts", "code": "incoming", "sequence_code": "IN", "warehouse_id": 1, "default_location_src_id": 4, "default_location_dest_id": 8}));
    env.insert("stock.picking.type", json!({"name": "Delivery Orders", "code": "outgoing", "sequence_code": "OUT", "warehouse_id": 1, "default_location_src_id": 8, "default_location_dest_id": 5}));
    env.insert("stock.picking.type", json!({"name": "Manufacturing", "code": "mrp_operation", "sequence_code": "MO", "warehouse_id": 1, "default_location_src_id": 8, "default_location_dest_id": 8}));
    env.insert("stock.warehouse", json!({"name": "My Company", "code": "WH", "lot_stock_id": 8, "out_type_id": 2, "in_type_id": 1, "company_id": 1}));
    env.insert(
        "account.tax",
        json!({"name": "15%", "amount": 15.0, "type_tax_use": "sale"}),
    );
    for (i, (module, name, model, res_id)) in [
        ("base", "main_partner", "res.partner", 1),
        ("base", "main_company", "res.company", 1),
        ("base", "user_admin", "res.users", 2),
        ("base", "partner_admin", "res.partner", 3),
        ("stock", "warehouse0", "stock.warehouse", 1),
        ("stock", "stock_location_stock", "stock.location", 8),
        ("stock", "stock_location_customers", "stock.location", 5),
    ]
    .into_iter()
    .enumerate()
    {
        let id = env.insert("ir.model.data", json!({"module": module, "name": name, "model": model, "res_id": res_id, "noupdate": true}));
        debug_assert_eq!(id, i as Id + 1);
    }
    // Model ids as the recordings used them (base.automation's model_id 606 = sale.order).
    env.seq.insert("ir.model".into(), 605);
    env.insert(
        "ir.model",
        json!({"name": "Sales Order", "model": "sale.order"}),
    );
    env.insert(
        "ir.model",
        json!({"name": "Contact", "model": "res.partner"}),
    );
    // Server actions as numbered on the recorded database (the first webhook one is 518).
    env.seq.insert("ir.actions.server".into(), 517);
    for (id, name) in crate::automation::SALE_ORDER_FIELD_IDS {
        env.seq.insert("ir.model.fields".into(), id - 1);
        env.insert(
            "ir.model.fields",
            json!({"name": name, "model": "sale.order", "model_id": 606}),
        );
    }
}

struct Product;

impl Behaviour for Product {
    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let model = if env.db.exists("product.product", id) {
            "product.product"
        } else {
            "product.template"
        };
        let name = env.get_str(model, id, "name");
        let code = env.get_str(model, id, "default_code");
        Some(if code.is_empty() {
            name
        } else {
            format!("[{code}] {name}")
        })
    }

    fn defaults(&self, _env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        vals.entry("type").or_insert(json!("consu"));
        vals.entry("categ_id").or_insert(json!(1));
        vals.entry("uom_id").or_insert(json!(1));
        Ok(())
    }

    fn after_create(&self, env: &mut Env, id: Id) -> OResult<()> {
        // A variant gets its template with the same id (the recordings' ids coincide).
        if env.db.exists("product.product", id) && !env.db.exists("product.template", id) {
            let rec = env
                .db
                .get("product.product", id)
                .cloned()
                .unwrap_or_default();
            let mut t = rec.clone();
            t.remove("product_tmpl_id");
            env.db
                .table_mut("product.template")
                .insert(id, std::sync::Arc::new(t));
            env.put("product.product", id, "product_tmpl_id", json!(id));
        }
        Ok(())
    }

    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        match field {
            "qty_available" | "virtual_available" => {
                Some(Ok(json!(crate::stock::on_hand(env, id))))
            }
            _ => None,
        }
    }
}

struct Location;

impl Behaviour for Location {
    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let name = env.get_str("stock.location", id, "name");
        match env.get_i64("stock.location", id, "location_id") {
            Some(p)
                if env.get_str("stock.location", p, "usage") == "view" && p != 1 && p != 3
                    || p == 2 =>
            {
                Some(format!(
                    "{}/{name}",
                    self.display_name(env, p).unwrap_or_default()
                ))
            }
            _ => Some(name),
        }
    }
}

struct PickingType;

impl Behaviour for PickingType {
    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let wh = env.get_i64("stock.picking.type", id, "warehouse_id")?;
        Some(format!(
            "{}: {}",
            env.get_str("stock.warehouse", wh, "name"),
            env.get_str("stock.picking.type", id, "name")
        ))
    }
}

/// The next number of a sequence like `S00001` kept in the sequences table.
pub fn next_name(env: &mut Env, key: &str, prefix: &str, width: usize) -> String {
    let n = env.next_id(&format!("ir.sequence:{key}"));
    format!("{prefix}{n:0width$}")
}

pub fn user_error(msg: &str) -> Exc {
    Exc::user(msg)
}

/// What `fields_get` says about a field beyond its definition: Odoo's label, its real
/// type when the simulator computes it, schema-level `required`/`readonly`, and the
/// labels of a selection (08_23, 08_24).
struct FieldInfo {
    ty: Option<&'static str>,
    string: Option<&'static str>,
    required: Option<bool>,
    readonly: Option<bool>,
    selection: &'static [(&'static str, &'static str)],
}

const INFO: FieldInfo = FieldInfo {
    ty: None,
    string: None,
    required: None,
    readonly: None,
    selection: &[],
};

fn field_info(model: &str, field: &str) -> FieldInfo {
    match (model, field) {
        (_, "create_date") => FieldInfo {
            string: Some("Created on"),
            ..INFO
        },
        (_, "write_date") => FieldInfo {
            string: Some("Last Updated on"),
            ..INFO
        },
        (_, "create_uid") => FieldInfo {
            string: Some("Created by"),
            ..INFO
        },
        (_, "write_uid") => FieldInfo {
            string: Some("Last Updated by"),
            ..INFO
        },
        (_, "display_name") => FieldInfo {
            string: Some("Display Name"),
            ..INFO
        },
        ("sale.order", "name") => FieldInfo {
            string: Some("Order Reference"),
            required: Some(true),
            ..INFO
        },
        ("sale.order", "partner_id") => FieldInfo {
            string: Some("Customer"),
            required: Some(true),
            ..INFO
        },
        ("sale.order", "client_order_ref") => FieldInfo {
            string: Some("Customer Reference"),
            ..INFO
        },
        ("sale.order", "state") => FieldInfo {
            string: Some("Status"),
            readonly: Some(true),
            selection: &[
                ("draft", "Quotation"),
                ("sent", "Quotation Sent"),
                ("sale", "Sales Order"),
                ("cancel", "Cancelled"),
            ],
            ..INFO
        },
        ("sale.order", "date_order") => FieldInfo {
            string: Some("Order Date"),
            required: Some(true),
            ..INFO
        },
        ("sale.order", "order_line") => FieldInfo {
            string: Some("Order Lines"),
            ..INFO
        },
        ("sale.order", "amount_untaxed") => FieldInfo {
            ty: Some("monetary"),
            string: Some("Untaxed Amount"),
            ..INFO
        },
        ("sale.order", "amount_tax") => FieldInfo {
            ty: Some("monetary"),
            string: Some("Taxes"),
            ..INFO
        },
        ("sale.order", "amount_total") => FieldInfo {
            ty: Some("monetary"),
            string: Some("Total"),
            ..INFO
        },
        ("sale.order", "invoice_status") => FieldInfo {
            ty: Some("selection"),
            string: Some("Invoice Status"),
            selection: &[
                ("upselling", "Upselling Opportunity"),
                ("invoiced", "Fully Invoiced"),
                ("to invoice", "To Invoice"),
                ("no", "Nothing to Invoice"),
            ],
            ..INFO
        },
        ("sale.order", "delivery_status") => FieldInfo {
            ty: Some("selection"),
            string: Some("Delivery Status"),
            selection: &[
                ("pending", "Not Delivered"),
                ("started", "Started"),
                ("partial", "Partially Delivered"),
                ("full", "Fully Delivered"),
            ],
            ..INFO
        },
        ("sale.order", "picking_ids") => FieldInfo {
            ty: Some("one2many"),
            string: Some("Transfers"),
            ..INFO
        },
        ("sale.order", "invoice_ids") => FieldInfo {
            ty: Some("many2many"),
            string: Some("Invoices"),
            ..INFO
        },
        ("sale.order", "invoice_count") => FieldInfo {
            ty: Some("integer"),
            string: Some("Invoice Count"),
            ..INFO
        },
        _ => INFO,
    }
}

fn str_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// `fields_get(allfields=None, attributes=None)`: the selected fields with the selected
/// attributes (all of Odoo's usual ones when none are asked for).
pub fn fields_get(
    env: &Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let def = env.reg.model(model)?;
    let allfields = str_list(args.first().or(kwargs.get("allfields"))).unwrap_or_default();
    let attributes = str_list(args.get(1).or(kwargs.get("attributes")));
    let mut out = Map::new();
    for f in &def.fields {
        if !allfields.is_empty() && !allfields.iter().any(|a| a == f.name) {
            continue;
        }
        let info = field_info(model, f.name);
        let computed = matches!(f.ty, Computed);
        let magic = matches!(
            f.name,
            "create_date" | "write_date" | "create_uid" | "write_uid" | "display_name"
        );
        let mut a = Map::new();
        let ty = info
            .ty
            .unwrap_or_else(|| crate::methods::field_type_name(&f.ty));
        a.insert("type".into(), json!(ty));
        a.insert("string".into(), json!(info.string.unwrap_or(f.string)));
        a.insert(
            "required".into(),
            json!(info.required.unwrap_or(f.required)),
        );
        a.insert(
            "readonly".into(),
            json!(info.readonly.unwrap_or(computed || magic)),
        );
        match &f.ty {
            Many2one(c) | Many2many(c) | One2many(c, _) => {
                a.insert("relation".into(), json!(c));
            }
            Selection(options) if info.selection.is_empty() => {
                let pairs: Vec<Value> = options.iter().map(|o| json!([o, o])).collect();
                a.insert("selection".into(), json!(pairs));
            }
            _ => {}
        }
        if !info.selection.is_empty() {
            let pairs: Vec<Value> = info.selection.iter().map(|(k, l)| json!([k, l])).collect();
            a.insert("selection".into(), json!(pairs));
        }
        if let Some(keep) = &attributes {
            a.retain(|k, _| keep.iter().any(|x| x == k));
        }
        out.insert(f.name.to_string(), Value::Object(a));
    }
    Ok(Value::Object(out))
}

/// `default_get(fields_list)`: the model's defaults for the asked fields, then the
/// context's `default_<field>` values (08_32: related fields such as currency_id and
/// fields without a default are left out).
pub fn default_get(
    env: &mut Env,
    model: &str,
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> OResult<Value> {
    let Some(fields) = str_list(args.first().or(kwargs.get("fields_list"))) else {
        return Err(Exc::type_error(
            "BaseModel.default_get() missing 1 required positional argument: 'fields_list'",
        ));
    };
    let mut defaults = Map::new();
    if let Some(Ok(Value::Object(m))) =
        env.reg
            .behaviour(model)
            .call(env, "default_get", vec![], &[], &Map::new())
    {
        defaults = m;
    }
    let mut out = Map::new();
    for f in &fields {
        if let Some(v) = env.ctx.get(&format!("default_{f}")) {
            out.insert(f.clone(), v.clone());
        } else if let Some(v) = defaults.get(f) {
            out.insert(f.clone(), v.clone());
        }
    }
    Ok(Value::Object(out))
}
