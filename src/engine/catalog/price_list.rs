//! On-demand prices from the AWS Price List API (`pricing:GetProducts`, service `AmazonEC2`). Each item
//! of a response's `PriceList` is a JSON document *in a string*:
//! `{"product": {"productFamily": "Compute Instance", "attributes": {"instanceType": "m5.large",
//! "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
//! "regionCode": "eu-west-3", ...}, "sku": "..."}, "terms": {"OnDemand": {"<sku>.<offer>":
//! {"priceDimensions": {"<rate code>": {"unit": "Hrs", "pricePerUnit": {"USD": "0.1120000000"}}}}}}}`.
//!
//! Decisions written down here:
//! - Only Linux, shared tenancy, no pre-installed software, `capacitystatus` `Used` (the price of a
//!   running instance, not of an unused reservation) counts; the request filters on the same terms, and
//!   a product of another kind that still comes back is ignored, not an error.
//! - A product that cannot be read (not JSON, an attribute or the USD hourly price missing or not a
//!   number) is skipped and counted with its reason; one bad product never loses the whole page.
//! - A type priced twice keeps the lower price (AWS has listed duplicates during price changes).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Why a Price List product was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductProblem {
    /// The item is not a JSON object.
    NotJson,
    /// A field the price needs is missing or not a string, e.g. `product.attributes.instanceType`.
    Missing(&'static str),
    /// `pricePerUnit.USD` is not a non-negative number.
    BadPrice(String),
}

impl fmt::Display for ProductProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProductProblem::NotJson => f.write_str("not a JSON object"),
            ProductProblem::Missing(field) => write!(f, "`{field}` missing"),
            ProductProblem::BadPrice(text) => write!(f, "price `{text}` is not a number"),
        }
    }
}

/// A skipped product: its SKU when readable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedProduct {
    /// `product.sku`, when it could be read.
    pub sku: Option<String>,
    /// What was wrong.
    pub problem: ProductProblem,
}

/// Hourly Linux on-demand prices of one region, from any number of GetProducts pages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnDemandPrices {
    /// USD per hour by instance type.
    pub prices: BTreeMap<String, f64>,
    /// Products that could not be read.
    pub skipped: Vec<SkippedProduct>,
}

impl OnDemandPrices {
    /// Adds the products of one GetProducts page for `region`.
    pub fn add_page<S: AsRef<str>>(&mut self, region: &str, price_list: &[S]) {
        for item in price_list {
            match read_product(item.as_ref(), region) {
                Ok(Some((instance_type, price))) => {
                    let slot = self.prices.entry(instance_type).or_insert(price);
                    *slot = slot.min(price);
                }
                Ok(None) => {}
                Err(skipped) => self.skipped.push(skipped),
            }
        }
    }

    /// The prices of one region's pages.
    pub fn parse<S: AsRef<str>>(region: &str, price_list: &[S]) -> OnDemandPrices {
        let mut prices = OnDemandPrices::default();
        prices.add_page(region, price_list);
        prices
    }
}

/// The attribute values a Linux, shared-tenancy, no-software, running-instance price carries.
const WANTED: [(&str, &str); 4] = [
    ("operatingSystem", "Linux"),
    ("tenancy", "Shared"),
    ("preInstalledSw", "NA"),
    ("capacitystatus", "Used"),
];

/// `Ok(None)`: a readable product of another kind (Windows, dedicated, another region).
fn read_product(item: &str, region: &str) -> Result<Option<(String, f64)>, SkippedProduct> {
    let doc: Value = serde_json::from_str(item).map_err(|_| SkippedProduct {
        sku: None,
        problem: ProductProblem::NotJson,
    })?;
    if !doc.is_object() {
        return Err(SkippedProduct {
            sku: None,
            problem: ProductProblem::NotJson,
        });
    }
    let sku = doc
        .pointer("/product/sku")
        .and_then(Value::as_str)
        .map(str::to_string);
    let skip = |problem| SkippedProduct {
        sku: sku.clone(),
        problem,
    };
    let attributes = doc
        .pointer("/product/attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| skip(ProductProblem::Missing("product.attributes")))?;
    let instance_type = attributes
        .get("instanceType")
        .and_then(Value::as_str)
        .ok_or_else(|| skip(ProductProblem::Missing("product.attributes.instanceType")))?;
    let attribute = |name: &str| attributes.get(name).and_then(Value::as_str);
    // Older price lists have no `capacitystatus`; a product without it is a running-instance price.
    let matches = WANTED
        .iter()
        .all(|(name, want)| attribute(name).is_none_or(|v| v == *want))
        && attribute("operatingSystem").is_some()
        && attribute("regionCode").is_none_or(|r| r == region);
    if !matches {
        return Ok(None);
    }
    let usd = doc
        .pointer("/terms/OnDemand")
        .and_then(Value::as_object)
        .and_then(|terms| terms.values().next())
        .and_then(|term| term.get("priceDimensions"))
        .and_then(Value::as_object)
        .and_then(|dims| dims.values().next())
        .and_then(|dim| dim.pointer("/pricePerUnit/USD"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            skip(ProductProblem::Missing(
                "terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD",
            ))
        })?;
    match usd.parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => {
            Ok(Some((instance_type.to_string(), price)))
        }
        _ => Err(skip(ProductProblem::BadPrice(usd.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product as GetProducts returns it (attributes trimmed to the ones read, plus a few others).
    fn product(instance_type: &str, os: &str, tenancy: &str, usd: &str) -> String {
        serde_json::json!({
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "operatingSystem": os,
                    "tenancy": tenancy,
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "licenseModel": "No License required",
                    "regionCode": "eu-west-3",
                    "location": "EU (Paris)",
                    "servicecode": "AmazonEC2"
                },
                "sku": format!("SKU{instance_type}")
            },
            "serviceCode": "AmazonEC2",
            "terms": {"OnDemand": {"SKU.JRTCKXETXF": {
                "priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {
                    "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [],
                    "description": "per On Demand Linux Instance Hour",
                    "pricePerUnit": {"USD": usd}
                }},
                "offerTermCode": "JRTCKXETXF", "termAttributes": {}
            }}},
            "version": "20260701000000",
            "publicationDate": "2026-07-01T00:00:00Z"
        })
        .to_string()
    }

    #[test]
    fn linux_shared_prices_are_read_and_others_ignored() {
        let page = [
            product("m5.large", "Linux", "Shared", "0.1120000000"),
            product("m5.large", "Windows", "Shared", "0.2040000000"),
            product("c5.large", "Linux", "Dedicated", "0.1000000000"),
        ];
        let prices = OnDemandPrices::parse("eu-west-3", &page);
        assert_eq!(prices.prices.get("m5.large"), Some(&0.112));
        assert_eq!(prices.prices.len(), 1);
        assert!(prices.skipped.is_empty());
    }

    #[test]
    fn another_regions_product_is_ignored() {
        let prices =
            OnDemandPrices::parse("us-east-1", &[product("m5.large", "Linux", "Shared", "1")]);
        assert!(prices.prices.is_empty());
        assert!(prices.skipped.is_empty());
    }

    #[test]
    fn malformed_products_are_skipped_with_a_reason_and_the_rest_kept() {
        let no_price = product("r5.large", "Linux", "Shared", "x").replace("pricePerUnit", "other");
        let page = [
            "{not json".to_string(),
            r#"{"product": {"sku": "ABC"}}"#.to_string(),
            product("c5.large", "Linux", "Shared", "cheap"),
            no_price,
            product("m5.large", "Linux", "Shared", "0.112"),
        ];
        let prices = OnDemandPrices::parse("eu-west-3", &page);
        assert_eq!(prices.prices.len(), 1);
        let problems: Vec<_> = prices.skipped.iter().map(|s| s.problem.clone()).collect();
        assert_eq!(
            problems,
            vec![
                ProductProblem::NotJson,
                ProductProblem::Missing("product.attributes"),
                ProductProblem::BadPrice("cheap".into()),
                ProductProblem::Missing("terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD"),
            ]
        );
        assert_eq!(prices.skipped[1].sku.as_deref(), Some("ABC"));
    }

    #[test]
    fn a_type_priced_twice_keeps_the_lower_price() {
        let page = [
            product("m5.large", "Linux", "Shared", "0.2"),
            product("m5.large", "Linux", "Shared", "0.1"),
        ];
        let prices = OnDemandPrices::parse("eu-west-3", &page);
        assert_eq!(prices.prices.get("m5.large"), Some(&0.1));
    }
}
