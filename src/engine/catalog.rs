//! The instance catalog: instance types, on-demand prices per (region, type), spot prices per (region,
//! zone, type) and Spot Advisor interruption buckets per (region, type) (DESIGN.md section 4).
//!
//! A catalog directory holds four files: `instance-types.csv` (`instance_type,family,arch,vcpu,memory_mib,
//! gpu`, optional `current_generation`), `on-demand-prices.csv` (`region,instance_type,price`),
//! `spot-prices.csv` (`region,zone,instance_type,price`) and `spot-advisor.json` (the public Spot Advisor
//! feed's own format). Prices are USD per hour, Linux. The binary embeds a sample catalog
//! ([`Catalog::embedded`], from `data/catalog/`) whose spot prices and advisor buckets are generated sample
//! data, so offline reports must say "sample data" ([`Catalog::is_sample`]).
//!
//! Decisions written down here:
//! - A region's zones are the zones that appear in `spot-prices.csv` for it.
//! - Prices and spot prices must name a type of `instance-types.csv` (a typo is an error, not a silent
//!   gap); Spot Advisor entries for other types or for regions without prices are ignored, since the
//!   public feed covers every type and region.
//! - Whether a type is current generation is not in the data: [`is_previous_generation_family`] decides,
//!   unless `instance-types.csv` has a `current_generation` column (`true`/`false`) for the row.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

mod csv;
mod export;
mod live;
mod price_list;
mod spot_advisor;

pub use export::{ExportInput, ExportedCatalog, export};
pub use live::{LiveData, LiveInstanceType};
pub use price_list::{OnDemandPrices, ProductProblem, SkippedProduct};
pub use spot_advisor::{
    AdvisorEntry, AdvisorRange, EntryField, JsonKind, MAX_BUCKET, MAX_SAVINGS_PERCENT, SkipReason,
    SkippedEntry, SpotAdvisor, name_a_few, parse_spot_advisor,
};

/// File name of the instance types in a catalog directory.
pub const INSTANCE_TYPES_FILE: &str = "instance-types.csv";
/// File name of the on-demand prices in a catalog directory.
pub const ON_DEMAND_PRICES_FILE: &str = "on-demand-prices.csv";
/// File name of the spot prices in a catalog directory.
pub const SPOT_PRICES_FILE: &str = "spot-prices.csv";
/// File name of the Spot Advisor feed in a catalog directory.
pub const SPOT_ADVISOR_FILE: &str = "spot-advisor.json";

/// Families AWS has moved to its "previous generation" list (no generation column exists in the data):
/// the first generations of general purpose, compute, memory, storage and accelerated types.
pub const PREVIOUS_GENERATION_FAMILIES: &[&str] = &[
    "c1", "c3", "c4", "cc1", "cc2", "cg1", "cr1", "d2", "f1", "g2", "g3", "g3s", "hi1", "hs1",
    "i2", "m1", "m2", "m3", "m4", "p2", "p3", "r3", "r4", "t1", "t2",
];

/// True when `family` (e.g. `m4`) is a previous-generation family: it is in
/// [`PREVIOUS_GENERATION_FAMILIES`].
pub fn is_previous_generation_family(family: &str) -> bool {
    PREVIOUS_GENERATION_FAMILIES.contains(&family)
}

/// A catalog error: names the file, the line and column (or JSON path), and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A catalog file could not be read.
    #[error(
        "cannot read {path}: {source}. Fix: a catalog directory must hold {INSTANCE_TYPES_FILE}, \
         {ON_DEMAND_PRICES_FILE}, {SPOT_PRICES_FILE} and {SPOT_ADVISOR_FILE}"
    )]
    Read {
        /// The file.
        path: String,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// A whole line is wrong (header, field count).
    #[error("{file}: line {line}: {problem}. Fix: {fix}")]
    Line {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// One field of a CSV line is wrong.
    #[error("{file}: line {line}, column `{column}`: {problem}. Fix: {fix}")]
    Field {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// The header name of the column.
        column: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The Spot Advisor JSON is not valid JSON, or its top level is not an object.
    #[error(
        "{file}: line {line}, column {column}: {problem}. Fix: use the Spot Advisor feed's format, \
         {{\"spot_advisor\": {{\"<region>\": {{\"Linux\": {{\"<type>\": {{\"s\": 70, \"r\": 1}}}}}}}}}}"
    )]
    Json {
        /// The file or URL.
        file: String,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The parser's message.
        problem: String,
    },
    /// The Spot Advisor JSON has no `spot_advisor` object (e.g. an S3 error body): taken as a feed, it
    /// would blank every bucket.
    #[error(
        "{file}: no `spot_advisor` object (it is {}). Fix: use the Spot Advisor feed's format, \
         {{\"spot_advisor\": {{\"<region>\": {{\"Linux\": {{\"<type>\": {{\"s\": 70, \"r\": 1}}}}}}}}}}",
        .found.map_or_else(|| "missing".to_string(), |kind| kind.to_string())
    )]
    NoAdvisorTable {
        /// The file or URL.
        file: String,
        /// What `spot_advisor` is instead (`None`: absent).
        found: Option<JsonKind>,
    },
}

/// CPU architecture, with EC2's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    /// 64-bit x86 (Intel, AMD).
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit Arm (Graviton).
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    /// EC2's name: `x86_64` or `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Parses EC2's names; `amd64` is accepted for `x86_64`.
    pub fn parse(name: &str) -> Option<Arch> {
        match name {
            "x86_64" | "amd64" => Some(Arch::X86_64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One EC2 instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// EC2 API name, e.g. `m5.large`.
    pub name: String,
    /// The part before the dot, e.g. `m5`.
    pub family: String,
    /// CPU architecture.
    pub arch: Arch,
    /// Default vCPU count.
    pub vcpu: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPU count (0 for none).
    pub gpu: u32,
    /// False for previous-generation families (see [`is_previous_generation_family`]).
    pub current_generation: bool,
}

impl InstanceType {
    /// Memory in GiB.
    pub fn memory_gib(&self) -> f64 {
        self.memory_mib as f64 / 1024.0
    }
}

/// The text of the four catalog files, and the directory name used in error messages.
#[derive(Debug, Clone, Copy)]
pub struct CatalogText<'a> {
    /// Names the directory in errors, e.g. the `--catalog` path.
    pub dir: &'a str,
    /// Content of `instance-types.csv`.
    pub instance_types: &'a str,
    /// Content of `on-demand-prices.csv`.
    pub on_demand_prices: &'a str,
    /// Content of `spot-prices.csv`.
    pub spot_prices: &'a str,
    /// Content of `spot-advisor.json`.
    pub spot_advisor: &'a str,
}

/// Instance types, prices and Spot Advisor buckets, indexed for fast ranking.
#[derive(Debug, Clone)]
pub struct Catalog {
    types: Vec<InstanceType>,
    index: HashMap<String, usize>,
    /// Sorted by name.
    regions: Vec<Region>,
    sample: bool,
    /// Entries of the catalog's `spot-advisor.json` skipped as unusable when it was parsed.
    advisor_skipped: Vec<SkippedEntry>,
}

/// Prices and advisor buckets of one region; the vectors are indexed like `Catalog::types`.
#[derive(Debug, Clone)]
pub(in crate::engine) struct Region {
    pub(in crate::engine) name: String,
    pub(in crate::engine) on_demand: Vec<Option<f64>>,
    pub(in crate::engine) advisor: Vec<Option<u8>>,
    /// Sorted by name.
    pub(in crate::engine) zones: Vec<Zone>,
}

/// Spot prices of one zone, indexed like `Catalog::types`.
#[derive(Debug, Clone)]
pub(in crate::engine) struct Zone {
    pub(in crate::engine) name: String,
    pub(in crate::engine) spot: Vec<Option<f64>>,
}

const EMBEDDED: CatalogText<'static> = CatalogText {
    dir: "data/catalog (embedded sample)",
    instance_types: include_str!("../../data/catalog/instance-types.csv"),
    on_demand_prices: include_str!("../../data/catalog/on-demand-prices.csv"),
    spot_prices: include_str!("../../data/catalog/spot-prices.csv"),
    spot_advisor: include_str!("../../data/catalog/spot-advisor.json"),
};

impl Catalog {
    /// The sample catalog compiled into the binary (`data/catalog/`), parsed once on first use. Its spot
    /// prices and advisor buckets are generated sample data: [`Catalog::is_sample`] is true.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let mut catalog = Catalog::parse(&EMBEDDED).expect(
                "the embedded sample catalog in data/catalog must parse (a unit test checks it)",
            );
            catalog.sample = true;
            catalog
        })
    }

    /// Reads a catalog directory (the four files named by the `*_FILE` constants).
    pub fn from_dir(path: &Path) -> Result<Catalog, CatalogError> {
        let read = |name: &str| {
            let file = path.join(name);
            std::fs::read_to_string(&file).map_err(|source| CatalogError::Read {
                path: file.display().to_string(),
                source,
            })
        };
        let instance_types = read(INSTANCE_TYPES_FILE)?;
        let on_demand_prices = read(ON_DEMAND_PRICES_FILE)?;
        let spot_prices = read(SPOT_PRICES_FILE)?;
        let spot_advisor = read(SPOT_ADVISOR_FILE)?;
        let dir = path.display().to_string();
        Catalog::parse(&CatalogText {
            dir: &dir,
            instance_types: &instance_types,
            on_demand_prices: &on_demand_prices,
            spot_prices: &spot_prices,
            spot_advisor: &spot_advisor,
        })
    }

    /// Builds a catalog from the text of its four files (not a sample: `is_sample` is false).
    pub fn parse(text: &CatalogText<'_>) -> Result<Catalog, CatalogError> {
        let file = |name: &str| format!("{}/{name}", text.dir);
        let types = parse_instance_types(&file(INSTANCE_TYPES_FILE), text.instance_types)?;
        let index = types
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let mut catalog = Catalog {
            types,
            index,
            regions: Vec::new(),
            sample: false,
            advisor_skipped: Vec::new(),
        };
        catalog.load_on_demand(&file(ON_DEMAND_PRICES_FILE), text.on_demand_prices)?;
        catalog.load_spot(&file(SPOT_PRICES_FILE), text.spot_prices)?;
        let advisor = SpotAdvisor::parse(&file(SPOT_ADVISOR_FILE), text.spot_advisor)?;
        catalog.load_advisor(&advisor);
        catalog.advisor_skipped = advisor.skipped().to_vec();
        catalog.regions.sort_by(|a, b| a.name.cmp(&b.name));
        for region in &mut catalog.regions {
            region.zones.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(catalog)
    }

    /// The instance type named `name`, e.g. `m5.large`.
    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        self.index.get(name).map(|&i| &self.types[i])
    }

    /// Every instance type, in the order of `instance-types.csv`.
    pub fn instance_types(&self) -> impl Iterator<Item = &InstanceType> {
        self.types.iter()
    }

    /// On-demand price, USD per hour, of `instance_type` in `region`.
    pub fn on_demand_price(&self, region: &str, instance_type: &str) -> Option<f64> {
        let i = *self.index.get(instance_type)?;
        self.region(region)?.on_demand[i]
    }

    /// Spot price, USD per hour, of `instance_type` in `zone` of `region`.
    pub fn spot_price(&self, region: &str, zone: &str, instance_type: &str) -> Option<f64> {
        let i = *self.index.get(instance_type)?;
        self.region(region)?
            .zones
            .iter()
            .find(|z| z.name == zone)?
            .spot[i]
    }

    /// Spot Advisor interruption bucket (0..=4: <5%, 5-10%, 10-15%, 15-20%, >20%) of `instance_type` in
    /// `region`; `None` when the feed has no entry.
    pub fn advisor_bucket(&self, region: &str, instance_type: &str) -> Option<u8> {
        let i = *self.index.get(instance_type)?;
        self.region(region)?.advisor[i]
    }

    /// The zones of `region` (those with spot prices), sorted; empty for an unknown region.
    pub fn zones(&self, region: &str) -> Vec<String> {
        self.region(region)
            .map(|r| r.zones.iter().map(|z| z.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The regions with prices, sorted.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.regions.iter().map(|r| r.name.as_str())
    }

    /// True for the embedded sample catalog: reports must label their figures "sample data".
    pub fn is_sample(&self) -> bool {
        self.sample
    }

    /// Entries of the catalog's own `spot-advisor.json` that were skipped as unusable (a real copy of
    /// the feed has some); the caller reports them, this module does no I/O.
    pub fn advisor_skipped(&self) -> &[SkippedEntry] {
        &self.advisor_skipped
    }

    /// The instance types as a slice, indexed like the vectors of [`Region`] and [`Zone`].
    pub(in crate::engine) fn types(&self) -> &[InstanceType] {
        &self.types
    }

    /// The index of `instance_type` in [`Catalog::types`].
    pub(in crate::engine) fn type_index(&self, instance_type: &str) -> Option<usize> {
        self.index.get(instance_type).copied()
    }

    /// The prices of `region`.
    pub(in crate::engine) fn region(&self, region: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == region)
    }

    fn region_mut(&mut self, name: &str) -> &mut Region {
        let position = match self.regions.iter().position(|r| r.name == name) {
            Some(position) => position,
            None => {
                let n = self.types.len();
                let region = Region {
                    name: name.to_string(),
                    on_demand: vec![None; n],
                    advisor: vec![None; n],
                    zones: Vec::new(),
                };
                self.regions.push(region);
                self.regions.len() - 1
            }
        };
        &mut self.regions[position]
    }

    fn known_type(
        &self,
        row: &csv::Row<'_>,
        col: usize,
        file: &str,
    ) -> Result<usize, CatalogError> {
        let name = row.text(col)?;
        self.index.get(name).copied().ok_or_else(|| {
            let problem = format!("instance type `{name}` is not in {INSTANCE_TYPES_FILE}");
            let fix = format!("add it to {INSTANCE_TYPES_FILE} or remove this line of {file}");
            row.error(col, &problem, &fix)
        })
    }

    fn load_on_demand(&mut self, file: &str, text: &str) -> Result<(), CatalogError> {
        const COLUMNS: &[&str] = &["region", "instance_type", "price"];
        let mut first_line: HashMap<(String, usize), usize> = HashMap::new();
        for row in csv::read(file, text, COLUMNS, COLUMNS.len())? {
            let region = row.text(0)?;
            let i = self.known_type(&row, 1, ON_DEMAND_PRICES_FILE)?;
            let price = row.price(2)?;
            if let Some(first) = first_line.insert((region.to_string(), i), row.line()) {
                return Err(duplicate(&row, 1, first));
            }
            self.region_mut(region).on_demand[i] = Some(price);
        }
        Ok(())
    }

    fn load_spot(&mut self, file: &str, text: &str) -> Result<(), CatalogError> {
        const COLUMNS: &[&str] = &["region", "zone", "instance_type", "price"];
        let mut first_line: HashMap<(String, usize), usize> = HashMap::new();
        for row in csv::read(file, text, COLUMNS, COLUMNS.len())? {
            let region = row.text(0)?;
            let zone = row.text(1)?;
            if !zone.starts_with(region) || zone.len() == region.len() {
                let problem = format!("zone `{zone}` is not a zone of region `{region}`");
                return Err(row.error(
                    1,
                    &problem,
                    &format!("write a zone of {region}, e.g. {region}a"),
                ));
            }
            let i = self.known_type(&row, 2, SPOT_PRICES_FILE)?;
            let price = row.price(3)?;
            if let Some(first) = first_line.insert((zone.to_string(), i), row.line()) {
                return Err(duplicate(&row, 2, first));
            }
            let n = self.types.len();
            let region = self.region_mut(region);
            let position = match region.zones.iter().position(|z| z.name == zone) {
                Some(position) => position,
                None => {
                    region.zones.push(Zone {
                        name: zone.to_string(),
                        spot: vec![None; n],
                    });
                    region.zones.len() - 1
                }
            };
            region.zones[position].spot[i] = Some(price);
        }
        Ok(())
    }

    fn load_advisor(&mut self, advisor: &SpotAdvisor) {
        for region in &mut self.regions {
            for (instance_type, entry) in advisor.entries(&region.name) {
                if let Some(&i) = self.index.get(instance_type) {
                    region.advisor[i] = Some(entry.bucket);
                }
            }
        }
    }
}

fn duplicate(row: &csv::Row<'_>, col: usize, first_line: usize) -> CatalogError {
    row.error(
        col,
        &format!("duplicate of line {first_line}"),
        "keep one price per key and remove the other line",
    )
}

fn parse_instance_types(file: &str, text: &str) -> Result<Vec<InstanceType>, CatalogError> {
    const COLUMNS: &[&str] = &[
        "instance_type",
        "family",
        "arch",
        "vcpu",
        "memory_mib",
        "gpu",
        "current_generation",
    ];
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut types = Vec::new();
    for row in csv::read(file, text, COLUMNS, 6)? {
        let name = row.text(0)?;
        if let Some(first) = first_line.insert(name, row.line()) {
            return Err(duplicate(&row, 0, first));
        }
        let family = row.text(1)?;
        if name
            .split_once('.')
            .is_none_or(|(prefix, _)| prefix != family)
        {
            let problem = format!("family `{family}` is not the part of `{name}` before the dot");
            return Err(row.error(
                1,
                &problem,
                "write the family as in the instance type name, e.g. m5 for m5.large",
            ));
        }
        let arch_name = row.text(2)?;
        let arch = Arch::parse(arch_name).ok_or_else(|| {
            row.error(
                2,
                &format!("unknown architecture `{arch_name}`"),
                "write x86_64 or arm64",
            )
        })?;
        let vcpu: u32 = row.number(3, "a whole number of vCPUs greater than zero")?;
        if vcpu == 0 {
            return Err(row.error(
                3,
                "vcpu is 0",
                "write a whole number of vCPUs greater than zero",
            ));
        }
        let memory_mib = row.number(4, "the memory in MiB as a whole number, e.g. 8192")?;
        let gpu = row.number(5, "the GPU count as a whole number (0 for none)")?;
        let current_generation = match row.optional(6) {
            None => !is_previous_generation_family(family),
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(row.error(
                    6,
                    &format!("`{other}` is not a boolean"),
                    "write true or false",
                ));
            }
        };
        types.push(InstanceType {
            name: name.to_string(),
            family: family.to_string(),
            arch,
            vcpu,
            memory_mib,
            gpu,
            current_generation,
        });
    }
    Ok(types)
}

#[cfg(test)]
pub(in crate::engine) mod tests {
    use super::*;

    /// A small catalog for tests: `types` rows are `name,family,arch,vcpu,memory_mib,gpu`.
    pub(in crate::engine) fn catalog(
        types: &str,
        on_demand: &str,
        spot: &str,
        advisor: &str,
    ) -> Catalog {
        Catalog::parse(&CatalogText {
            dir: "test",
            instance_types: &format!("instance_type,family,arch,vcpu,memory_mib,gpu\n{types}"),
            on_demand_prices: &format!("region,instance_type,price\n{on_demand}"),
            spot_prices: &format!("region,zone,instance_type,price\n{spot}"),
            spot_advisor: advisor,
        })
        .unwrap()
    }

    fn small() -> Catalog {
        catalog(
            "m5.large,m5,x86_64,2,8192,0\nm4.large,m4,x86_64,2,8192,0\nm7g.large,m7g,arm64,2,8192,0\n",
            "us-east-1,m5.large,0.096\nus-east-1,m4.large,0.1\neu-west-1,m5.large,0.107\n",
            "us-east-1,us-east-1b,m5.large,0.04\nus-east-1,us-east-1a,m5.large,0.035\n",
            r#"{"spot_advisor":{"us-east-1":{"Linux":{"m5.large":{"s":60,"r":2},"x9.huge":{"s":1,"r":0}}},
               "ap-south-1":{"Linux":{"m5.large":{"s":60,"r":1}}}}}"#,
        )
    }

    #[test]
    fn lookups_return_what_the_files_say() {
        let c = small();
        let m5 = c.instance_type("m5.large").unwrap();
        assert_eq!(
            (m5.vcpu, m5.memory_mib, m5.arch, m5.gpu),
            (2, 8192, Arch::X86_64, 0)
        );
        assert_eq!(c.on_demand_price("us-east-1", "m5.large"), Some(0.096));
        assert_eq!(c.on_demand_price("eu-west-1", "m5.large"), Some(0.107));
        assert_eq!(c.on_demand_price("us-east-1", "m7g.large"), None);
        assert_eq!(
            c.spot_price("us-east-1", "us-east-1a", "m5.large"),
            Some(0.035)
        );
        assert_eq!(c.spot_price("us-east-1", "us-east-1c", "m5.large"), None);
        assert_eq!(c.advisor_bucket("us-east-1", "m5.large"), Some(2));
        assert_eq!(c.advisor_bucket("us-east-1", "m4.large"), None);
        assert_eq!(c.zones("us-east-1"), ["us-east-1a", "us-east-1b"]);
        assert!(c.zones("eu-west-1").is_empty());
        assert_eq!(c.regions().collect::<Vec<_>>(), ["eu-west-1", "us-east-1"]);
        assert!(!c.is_sample());
    }

    #[test]
    fn a_bad_advisor_entry_is_skipped_and_reported_not_a_load_error() {
        let c = catalog(
            "m5.large,m5,x86_64,2,8192,0\nm4.large,m4,x86_64,2,8192,0\n",
            "us-east-1,m5.large,0.096\nus-east-1,m4.large,0.1\n",
            "",
            r#"{"spot_advisor":{"us-east-1":{"Linux":{"m5.large":{"s":60,"r":2},"m4.large":{"s":-5,"r":1}}}}}"#,
        );
        assert_eq!(c.advisor_bucket("us-east-1", "m5.large"), Some(2));
        assert_eq!(c.advisor_bucket("us-east-1", "m4.large"), None);
        let skipped: Vec<_> = c.advisor_skipped().iter().map(|s| s.path()).collect();
        assert_eq!(skipped, ["spot_advisor.us-east-1.Linux.m4.large"]);
    }

    #[test]
    fn previous_generation_follows_the_family_rule() {
        let c = small();
        assert!(c.instance_type("m5.large").unwrap().current_generation);
        assert!(!c.instance_type("m4.large").unwrap().current_generation);
    }

    #[test]
    fn current_generation_column_overrides_the_family_rule() {
        let c = Catalog::parse(&CatalogText {
            dir: "d",
            instance_types: "instance_type,family,arch,vcpu,memory_mib,gpu,current_generation\n\
                             m4.large,m4,x86_64,2,8192,0,true\nm5.large,m5,x86_64,2,8192,0,false\n",
            on_demand_prices: "region,instance_type,price\n",
            spot_prices: "region,zone,instance_type,price\n",
            spot_advisor: r#"{"spot_advisor": {}}"#,
        })
        .unwrap();
        assert!(c.instance_type("m4.large").unwrap().current_generation);
        assert!(!c.instance_type("m5.large").unwrap().current_generation);
    }

    fn parse_err(types: &str, on_demand: &str, spot: &str) -> String {
        Catalog::parse(&CatalogText {
            dir: "cat",
            instance_types: types,
            on_demand_prices: on_demand,
            spot_prices: spot,
            spot_advisor: r#"{"spot_advisor": {}}"#,
        })
        .unwrap_err()
        .to_string()
    }

    const TYPES: &str =
        "instance_type,family,arch,vcpu,memory_mib,gpu\nm5.large,m5,x86_64,2,8192,0\n";
    const NO_OD: &str = "region,instance_type,price\n";
    const NO_SPOT: &str = "region,zone,instance_type,price\n";

    #[test]
    fn price_for_unknown_type_names_file_line_column_and_fix() {
        let err = parse_err(
            TYPES,
            "region,instance_type,price\nus-east-1,m5.larg,0.1\n",
            NO_SPOT,
        );
        assert!(
            err.contains("cat/on-demand-prices.csv: line 2, column `instance_type`"),
            "{err}"
        );
        assert!(
            err.contains("`m5.larg` is not in instance-types.csv"),
            "{err}"
        );
        assert!(err.contains("Fix: add it"), "{err}");
    }

    #[test]
    fn duplicate_spot_price_names_both_lines() {
        let spot = "region,zone,instance_type,price\nus-east-1,us-east-1a,m5.large,0.1\n\
                    us-east-1,us-east-1a,m5.large,0.2\n";
        let err = parse_err(TYPES, NO_OD, spot);
        assert!(
            err.contains("spot-prices.csv: line 3") && err.contains("duplicate of line 2"),
            "{err}"
        );
    }

    #[test]
    fn zone_outside_its_region_is_rejected() {
        let spot = "region,zone,instance_type,price\nus-east-1,eu-west-1a,m5.large,0.1\n";
        let err = parse_err(TYPES, NO_OD, spot);
        assert!(
            err.contains("column `zone`") && err.contains("not a zone of region `us-east-1`"),
            "{err}"
        );
    }

    #[test]
    fn bad_instance_type_fields_are_named() {
        let cases = [
            ("m5.large,m5,sparc,2,8192,0", "column `arch`"),
            ("m5.large,m5,x86_64,two,8192,0", "column `vcpu`"),
            ("m5.large,m5,x86_64,0,8192,0", "vcpu is 0"),
            ("m5.large,c5,x86_64,2,8192,0", "column `family`"),
            (
                "m5.large,m5,x86_64,2,,0",
                "column `memory_mib`: the value is empty",
            ),
        ];
        for (row, expected) in cases {
            let err = parse_err(
                &format!("instance_type,family,arch,vcpu,memory_mib,gpu\n{row}\n"),
                NO_OD,
                NO_SPOT,
            );
            assert!(
                err.contains("instance-types.csv: line 2") && err.contains(expected),
                "{row}: {err}"
            );
        }
    }

    #[test]
    fn from_dir_reads_the_four_files_and_names_a_missing_one() {
        let dir =
            std::env::temp_dir().join(format!("cloudoptim-catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(INSTANCE_TYPES_FILE), TYPES).unwrap();
        std::fs::write(
            dir.join(ON_DEMAND_PRICES_FILE),
            "region,instance_type,price\nus-east-1,m5.large,0.096\n",
        )
        .unwrap();
        std::fs::write(dir.join(SPOT_PRICES_FILE), NO_SPOT).unwrap();
        let err = Catalog::from_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("spot-advisor.json") && err.contains("Fix: a catalog directory must hold"),
            "{err}"
        );
        std::fs::write(dir.join(SPOT_ADVISOR_FILE), r#"{"spot_advisor": {}}"#).unwrap();
        let c = Catalog::from_dir(&dir).unwrap();
        assert_eq!(c.on_demand_price("us-east-1", "m5.large"), Some(0.096));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn embedded_catalog_parses_and_is_labelled_sample() {
        let c = Catalog::embedded();
        assert!(c.is_sample());
        assert_eq!(c.instance_types().count(), 946);
        assert_eq!(c.regions().collect::<Vec<_>>(), ["eu-west-1", "us-east-1"]);
        assert_eq!(c.zones("us-east-1").len(), 6);
        assert_eq!(
            c.zones("eu-west-1"),
            ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
        );
        // Real us-east-1 on-demand price from the reference data.
        assert_eq!(c.on_demand_price("us-east-1", "m5.large"), Some(0.096));
        assert!(!c.instance_type("m4.large").unwrap().current_generation);
        assert!(c.instance_type("m7g.large").unwrap().current_generation);
    }

    #[test]
    fn embedded_sample_advisor_has_no_entry_to_skip() {
        let advisor = SpotAdvisor::parse("embedded", EMBEDDED.spot_advisor).unwrap();
        assert!(advisor.skipped().is_empty(), "{:?}", advisor.skipped());
        assert!(advisor.entries("us-east-1").count() > 900);
    }

    #[test]
    fn embedded_catalog_follows_the_sample_rule() {
        let c = Catalog::embedded();
        let (mut buckets, mut missing) = ([0usize; 5], 0);
        for t in c.instance_types() {
            let us = c.on_demand_price("us-east-1", &t.name).unwrap();
            let eu = c.on_demand_price("eu-west-1", &t.name).unwrap();
            assert!(
                (eu - us * 1.12).abs() < 1e-6,
                "{}: eu-west-1 {eu} != 1.12 x {us}",
                t.name
            );
            for region in ["us-east-1", "eu-west-1"] {
                let od = c.on_demand_price(region, &t.name).unwrap();
                for zone in c.zones(region) {
                    let spot = c.spot_price(region, &zone, &t.name).unwrap();
                    let factor_ok = spot >= 0.25 * od - 1e-6 && spot <= 0.60 * od + 1e-6;
                    assert!(
                        factor_ok,
                        "{zone} {}: spot {spot} outside [0.25, 0.6] x {od}",
                        t.name
                    );
                }
                match c.advisor_bucket(region, &t.name) {
                    Some(r) => buckets[usize::from(r)] += 1,
                    None => missing += 1,
                }
            }
        }
        let pairs = 2 * c.instance_types().count();
        assert!(
            buckets.iter().all(|&n| n > 0),
            "every bucket occurs: {buckets:?}"
        );
        assert!(
            missing > 0 && missing < pairs / 20,
            "about 2% missing: {missing} of {pairs}"
        );
    }
}
