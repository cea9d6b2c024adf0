//! The `list-profiles` / `capabilities` document: what a host can run.

use serde::{Deserialize, Serialize};

use super::{Backend, ProfileEntry, SCHEMA};
use crate::profiles::ProfileTable;
use crate::support::Support;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub schema: u32,
    pub backend: Backend,
    pub datapath: String,
    /// The newest runnable profile: what `serve` uses without `--profile`.
    pub default: Option<String>,
    pub profiles: Vec<ProfileEntry>,
}

impl Catalog {
    pub fn new(table: &ProfileTable, support: &Support) -> Self {
        Catalog {
            schema: SCHEMA,
            backend: Backend::this(),
            datapath: support.datapath.name().to_string(),
            default: table.newest(|p| support.runs(p)).map(|p| p.id.clone()),
            profiles: table
                .profiles
                .iter()
                .map(|p| ProfileEntry::new(p, support))
                .collect(),
        }
    }
}
