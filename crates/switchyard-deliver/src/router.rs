//! Routing: what every flow makes of one event, as deliveries to write in the event's own
//! transaction. Pure: the same event and flows give the same deliveries (leases aside).

use switchyard_core::CloudEvent;
use switchyard_core::flows::{Flow, Flows, Routed};
use switchyard_store::{DeliveryState, NewDelivery};

/// The delivery one flow makes of an event (the flow must select it).
pub fn delivery(flow: &Flow, event: &CloudEvent, routed: Routed) -> NewDelivery {
    let traceparent = event
        .extensions
        .get("traceparent")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let mut d = NewDelivery {
        flow: flow.name.clone(),
        flow_version: flow.version.clone(),
        destination: flow.destination.clone(),
        lane: flow.lane,
        ordering_key: None,
        hold_on_dead: flow.hold_on_dead(),
        state: DeliveryState::Scheduled,
        payload: None,
        error: None,
        error_detail: None,
        traceparent,
        lease: None,
    };
    match routed {
        Routed::Filtered => d.state = DeliveryState::Filtered,
        Routed::Ready {
            payload,
            ordering_key,
        } => {
            d.payload = Some(payload);
            d.ordering_key = ordering_key;
        }
        Routed::MappingFailed { error } => {
            d.state = DeliveryState::MappingFailed;
            d.error = Some(error);
        }
        Routed::Invalid {
            payload,
            ordering_key,
            errors,
        } => {
            d.state = DeliveryState::Invalid;
            d.payload = Some(payload);
            d.ordering_key = ordering_key;
            d.error = Some(summarise(&errors));
            d.error_detail = serde_json::to_value(&errors).ok();
        }
    }
    d
}

/// "3 schema errors: /order: 7 is not of type "string"; …"
pub fn summarise(errors: &[switchyard_core::flows::SchemaError]) -> String {
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| {
            let at = if e.pointer.is_empty() {
                "/"
            } else {
                &e.pointer
            };
            format!("{at}: {}", e.message)
        })
        .collect();
    let more = errors.len().saturating_sub(3);
    let mut s = format!(
        "{} schema error{}: {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        shown.join("; ")
    );
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Every flow selecting `event`, routed (no leases): backfills and tests.
pub fn route(flows: &Flows, event: &CloudEvent) -> Vec<NewDelivery> {
    let input = switchyard_core::jq::Prepared::new(&event.to_json());
    flows
        .selecting(event)
        .map(|f| {
            let routed = match &input {
                Ok(i) => f.route(i),
                Err(e) => Routed::MappingFailed { error: e.clone() },
            };
            delivery(f, event, routed)
        })
        .collect()
}
