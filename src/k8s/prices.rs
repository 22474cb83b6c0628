//! Prices on the snapshot's nodes, from any [`PriceBook`] (the offline catalog or live prices).

use super::*;

/// Prices per instance type and zone, for [`apply_prices`].
pub trait PriceBook {
    /// On-demand USD per hour of `instance_type` in `region`.
    fn on_demand(&self, region: &str, instance_type: &str) -> Option<f64>;
    /// Spot USD per hour of `instance_type` in `zone` of `region`.
    fn spot(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64>;
}

impl PriceBook for Catalog {
    fn on_demand(&self, region: &str, instance_type: &str) -> Option<f64> {
        self.on_demand_price(region, instance_type)
    }
    fn spot(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64> {
        self.spot_price(region, zone, instance_type)
    }
}

/// Fill every node's prices from `book`: its hourly price (spot price for spot nodes), the on-demand
/// price of its type in its region, and the spot price of its type in its zone. Nodes without instance
/// type or region stay unpriced.
pub fn apply_prices(snapshot: &mut Snapshot, book: &impl PriceBook) {
    for node in &mut snapshot.nodes {
        let (Some(instance_type), Some(region)) =
            (node.instance_type.as_deref(), node.region.as_deref())
        else {
            continue;
        };
        node.on_demand_price = book.on_demand(region, instance_type);
        node.spot_price = node
            .zone
            .as_deref()
            .and_then(|zone| book.spot(region, zone, instance_type));
        node.hourly_price = match node.capacity_type {
            CapacityType::Spot => node.spot_price,
            CapacityType::OnDemand => node.on_demand_price,
        };
    }
}
