//! The profile table as written in TOML, before inheritance is resolved.
//!
//! Every value a person may get wrong is `Spanned`, so an error can point at
//! the line and column where it was written.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    pub schema: Spanned<i64>,
    #[serde(default)]
    pub profile: Vec<RawProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub based_on: Option<Spanned<String>>,
    pub features: Option<Vec<Spanned<String>>>,
    pub features_mask: Option<Spanned<String>>,
    #[serde(default)]
    pub add_features: Vec<Spanned<String>>,
    #[serde(default)]
    pub remove_features: Vec<Spanned<String>>,
    pub protocol_features: Option<Vec<Spanned<String>>>,
    pub protocol_features_mask: Option<Spanned<String>>,
    #[serde(default)]
    pub add_protocol_features: Vec<Spanned<String>>,
    #[serde(default)]
    pub remove_protocol_features: Vec<Spanned<String>>,
    pub max_queue_pairs: Option<Spanned<i64>>,
    pub max_queue_size: Option<Spanned<i64>>,
}

/// Line and column (both from 1) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, column)
}
