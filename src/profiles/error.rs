//! Errors in a profile table, each naming where it was found and the rule.

use std::fmt;

use crate::features::{MaskError, NameError};

/// A table that cannot be used, with the file and position at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TableError {
    /// The file name, or `built-in table`.
    pub origin: String,
    /// Line and column, from 1, where known.
    pub position: Option<(usize, usize)>,
    pub problem: Box<Problem>,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.origin, self.problem),
            None => write!(f, "{}: {}", self.origin, self.problem),
        }
    }
}

/// What is wrong; the message names the profile and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Syntax(String),
    #[error("schema = {0} is not supported; this version reads schema = 1")]
    Schema(i64),
    #[error("the table has no [[profile]] entries")]
    Empty,
    #[error("profile id \"{id}\" may only use letters, digits, '.', '_' and '-'")]
    BadId { id: String },
    #[error("profile \"{id}\" is defined twice (first at line {first_line})")]
    DuplicateId { id: String, first_line: usize },
    #[error(
        "profile \"{id}\": based_on names \"{parent}\", which is not in the table{}",
        suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default()
    )]
    UnknownParent {
        id: String,
        parent: String,
        suggestion: Option<String>,
    },
    #[error("profile \"{}\": based_on forms a cycle: {}", .chain[0], .chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("profile \"{id}\": {key}: {error}")]
    Name {
        id: String,
        key: &'static str,
        error: NameError,
    },
    #[error("profile \"{id}\": {key}: {error}")]
    Mask {
        id: String,
        key: &'static str,
        error: MaskError,
    },
    #[error("profile \"{id}\": give either {list_key} or {mask_key}, not both")]
    ListAndMask {
        id: String,
        list_key: &'static str,
        mask_key: &'static str,
    },
    #[error("profile \"{id}\": {key} edits an inherited set, so it needs based_on")]
    EditWithoutParent { id: String, key: &'static str },
    #[error("profile \"{id}\": {key} is required (or inherit it with based_on)")]
    Missing { id: String, key: &'static str },
    #[error("profile \"{id}\": {key} adds {name}, which {base} already has")]
    AlreadyPresent {
        id: String,
        key: &'static str,
        name: String,
        /// What the edit applies to: the parent profile or the profile's own list.
        base: String,
    },
    #[error("profile \"{id}\": {key} removes {name}, which {base} does not have")]
    NotPresent {
        id: String,
        key: &'static str,
        name: String,
        base: String,
    },
    #[error("profile \"{id}\": max_queue_size = {value} must be a power of two from 1 to 32768")]
    QueueSize { id: String, value: i64 },
    #[error(
        "profile \"{id}\": max_queue_pairs = {value} must be from 1 to 128 \
         (vhost-user addresses at most 256 vrings)"
    )]
    QueuePairs { id: String, value: i64 },
    #[error("profile \"{id}\": the virtio specification forbids it: {unmet}")]
    Dependency { id: String, unmet: String },
    #[error(
        "profile \"{id}\": protocol features need the PROTOCOL_FEATURES feature \
         (VHOST_USER_F_PROTOCOL_FEATURES, bit 30)"
    )]
    ProtocolWithoutFlag { id: String },
    #[error(
        "profile \"{id}\": max_queue_pairs = {pairs} needs {missing}, \
         without which a frontend can use only one queue pair"
    )]
    MultiqueueWithoutMq {
        id: String,
        pairs: u16,
        missing: String,
    },
}
