//! The simulated business models: their fields, the seed data of a fresh Odoo 18 database
//! (as the recordings show it), and the behaviour of partners and users. Sales, stock,
//! invoicing and manufacturing live in [`crate::business`].

use crate::SimConfig;
use crate::exc::{Exc, OResult};
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

/// A field with Odoo's label (`string`), where messages quote it (import errors).
fn labelled(name: &'static str, ty: FieldType, string: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: false,
        string,
    }
}

fn req(name: &'static str, ty: FieldType, string: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty,
        required: true,
        string,
    }
}

pub fn model(name: &'static str, description: &'static str, fields: Vec<FieldDef>) -> ModelDef {
    let has_active = fields.iter().any(|f| f.name == "active");
    ModelDef {
        name,
        description,
        fields,
        order: "id",
        rec_name: "name",
        has_active,
        admin_only: false,
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::default();
    let mut partner = model(
        "res.partner",
        "Contact",
        vec![
            f("name", Char),
            f("email", Char),
            f("phone", Char),
            f("mobile", Char),
            f("street", Char),
            f("street2", Char),
            f("city", Char),
            f("zip", Char),
            f("ref", Char),
            f("vat", Char),
            f("website", Char),
            f("comment", Html),
            f("function", Char),
            labelled("is_company", Boolean, "Is a Company"),
            f("active", Boolean),
            labelled(
                "type",
                Selection(vec!["contact", "invoice", "delivery", "other"]),
                "Address Type",
            ),
            labelled("parent_id", Many2one("res.partner"), "Related Company"),
            f("child_ids", One2many("res.partner", "parent_id")),
            f("company_id", Many2one("res.company")),
            labelled("category_id", Many2many("res.partner.category"), "Tags"),
            f("country_id", Many2one("res.country")),
            f("user_id", Many2one("res.users")),
            f("customer_rank", Integer),
            f("supplier_rank", Integer),
            f("lang", Char),
            f("tz", Char),
        ],
    );
    partner.order = "complete_name ASC, id DESC";
    partner.fields.push(f("complete_name", Computed));
    r.add(partner, Box::new(Partner));
    r.add(
        model(
            "res.partner.category",
            "Partner Tags",
            vec![
                req("name", Char, "Tag Name"),
                f("color", Integer),
                f("active", Boolean),
                f("parent_id", Many2one("res.partner.category")),
            ],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "res.country",
            "Country",
            vec![f("name", Char), f("code", Char)],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "res.currency",
            "Currency",
            vec![f("name", Char), f("symbol", Char), f("active", Boolean)],
        ),
        Box::new(Plain),
    );
    r.add(
        model(
            "res.company",
            "Companies",
            vec![
                req("name", Char, "Company Name"),
                f("partner_id", Many2one("res.partner")),
                f("currency_id", Many2one("res.currency")),
                f("sale_stock_sms_confirmation", Boolean),
            ],
        ),
        Box::new(Plain),
    );
    let mut users = model(
        "res.users",
        "User",
        vec![
            req("login", Char, "Login"),
            f("password", Char),
            f("active", Boolean),
            f("partner_id", Many2one("res.partner")),
            f("company_id", Many2one("res.company")),
            f("name", Computed),
            f("share", Boolean),
        ],
    );
    users.rec_name = "login";
    r.add(users, Box::new(Users));
    let mut keys = model(
        "res.users.apikeys",
        "Users API Keys",
        vec![
            f("name", Char),
            f("key", Char),
            f("scope", Char),
            f("user_id", Many2one("res.users")),
            f("expiration_date", Datetime),
        ],
    );
    keys.admin_only = true;
    r.add(keys, Box::new(Plain));
    let mut params = model(
        "ir.config_parameter",
        "System Parameter",
        vec![req("key", Char, "Key"), f("value", Text)],
    );
    params.rec_name = "key";
    params.admin_only = true;
    r.add(params, Box::new(Plain));
    crate::import::register(&mut r);
    crate::business::register(&mut r);
    r
}

/// The state of a fresh database as the recordings found it: "My Company", the admin
/// (uid 2, partner 3) and a plain internal user `peer_limited` (uid 6, partner 7).
pub fn seed(env: &mut Env, config: &SimConfig) {
    env.insert("res.currency", json!({"name": "USD", "symbol": "$"}));
    env.insert(
        "res.country",
        json!({"name": "United States", "code": "US"}),
    );
    for (name, active, company, email, is_company) in [
        ("My Company", true, Value::Null, Value::Null, true),
        (
            "OdooBot",
            false,
            json!(1),
            json!("odoobot@example.com"),
            false,
        ),
        (
            "Administrator",
            true,
            json!(1),
            json!("admin@example.com"),
            false,
        ),
        ("Public user", false, json!(1), Value::Null, false),
        ("Default User Template", false, json!(1), Value::Null, false),
        ("Portal User Template", false, json!(1), Value::Null, false),
        ("Peer Limited", true, json!(1), Value::Null, false),
    ] {
        env.insert("res.partner", json!({"name": name, "active": active, "company_id": company, "email": email, "is_company": is_company, "type": "contact"}));
    }
    env.insert("res.company", json!({"name": "My Company", "partner_id": 1, "currency_id": 1, "sale_stock_sms_confirmation": true}));
    for (login, partner, active) in [
        ("__system__", 2, false),
        ("admin", 3, true),
        ("public", 4, false),
        ("default", 5, false),
        ("portaltemplate", 6, false),
        ("peer_limited", 7, true),
    ] {
        env.insert(
            "res.users",
            json!({"login": login, "partner_id": partner, "active": active, "company_id": 1,
            "password": if active { json!(config.admin_password) } else { Value::Null }}),
        );
    }
    env.insert(
        "ir.config_parameter",
        json!({"key": "web.base.url", "value": "http://127.0.0.1:8069"}),
    );
    env.insert(
        "ir.config_parameter",
        json!({"key": "database.uuid", "value": uuid::Uuid::new_v4().to_string()}),
    );
    crate::business::seed(env);
}

struct Partner;

impl Behaviour for Partner {
    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let name = env.get_str("res.partner", id, "name");
        let parent = env.get_i64("res.partner", id, "parent_id");
        let is_company = env
            .get("res.partner", id, "is_company")
            .as_bool()
            .unwrap_or(false);
        match parent {
            Some(p) if !is_company && env.db.exists("res.partner", p) => {
                Some(format!("{}, {name}", env.get_str("res.partner", p, "name")))
            }
            _ => Some(name),
        }
    }

    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        match field {
            "complete_name" => Some(Ok(json!(self.display_name(env, id).unwrap_or_default()))),
            _ => None,
        }
    }

    fn defaults(&self, _env: &mut Env, vals: &mut Map<String, Value>) -> OResult<()> {
        vals.entry("type").or_insert(json!("contact"));
        Ok(())
    }

    fn check(&self, env: &Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            let ty = env.get_str("res.partner", id, "type");
            if ty == "contact" && env.get_str("res.partner", id, "name").is_empty() {
                return Err(Exc::validation(
                    "The operation cannot be completed: Contacts require a name",
                ));
            }
            // No cycles through parent_id.
            let mut seen = vec![id];
            let mut cur = env.get_i64("res.partner", id, "parent_id");
            while let Some(p) = cur {
                if seen.contains(&p) {
                    return Err(Exc::validation(
                        "You cannot create recursive Partner hierarchies.",
                    ));
                }
                seen.push(p);
                cur = env.get_i64("res.partner", p, "parent_id");
            }
        }
        Ok(())
    }

    fn before_unlink(&self, env: &mut Env, ids: &[Id]) -> OResult<()> {
        for &id in ids {
            if !env.find("res.company", "partner_id", &json!(id)).is_empty() {
                return Err(fk_error(
                    "Companies",
                    "res.company",
                    "res_company_partner_id_fkey",
                ));
            }
            if !env.find("res.users", "partner_id", &json!(id)).is_empty() {
                return Err(fk_error("User", "res.users", "res_users_partner_id_fkey"));
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
        match method {
            "address_get" => Some(Ok(json!({"contact": ids.first()}))),
            "commercial_partner_id" => None,
            _ => {
                let _ = env;
                None
            }
        }
    }
}

/// Odoo's wording of a foreign-key violation (a ValidationError, fault 2).
pub fn fk_error(description: &str, model: &str, constraint: &str) -> Exc {
    Exc::validation(format!(
        "The operation cannot be completed: another model requires the record being deleted. If possible, archive it instead.\n\nModel: {description} ({model})\nConstraint: {constraint}\n"
    ))
}

struct Users;

impl Behaviour for Users {
    fn display_name(&self, env: &Env, id: Id) -> Option<String> {
        let p = env.get_i64("res.users", id, "partner_id")?;
        Some(env.get_str("res.partner", p, "name"))
    }
    fn compute(&self, env: &Env, id: Id, field: &str) -> Option<OResult<Value>> {
        (field == "name").then(|| Ok(json!(self.display_name(env, id).unwrap_or_default())))
    }
    fn call(
        &self,
        env: &mut Env,
        method: &str,
        _ids: Vec<Id>,
        _args: &[Value],
        _kwargs: &Map<String, Value>,
    ) -> Option<OResult<Value>> {
        // `@api.model`: the caller's own context; JSON-2 clients read their uid from it
        // (Odoo 19 external API docs, "Migrating from XML-RPC / JSON-RPC").
        (method == "context_get").then(|| Ok(json!({"lang": "en_US", "tz": false, "uid": env.uid})))
    }
}
