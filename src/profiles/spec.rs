//! From TOML text to per-profile specifications with names turned into bits.

use std::collections::HashMap;

use toml::Spanned;

use super::error::{Problem, TableError};
use super::source::{line_col, RawProfile, RawTable};
use crate::features::{self, Namespace};

pub type Position = (usize, usize);

/// One `[[profile]]` with its names resolved to bits, inheritance not yet applied.
#[derive(Debug)]
pub struct Spec {
    pub id: String,
    pub id_at: Position,
    pub description: String,
    pub parent: Option<(String, Position)>,
    pub features: SetSpec,
    pub protocol: SetSpec,
    pub max_queue_pairs: Option<(i64, Position)>,
    pub max_queue_size: Option<(i64, Position)>,
}

/// How one mask is built: an explicit base (or the parent's), then edits.
#[derive(Debug)]
pub struct SetSpec {
    pub keys: Keys,
    pub base: Option<u64>,
    pub add: Vec<Edit>,
    pub remove: Vec<Edit>,
}

#[derive(Debug)]
pub struct Edit {
    pub mask: u64,
    pub name: &'static str,
    pub at: Position,
}

/// The TOML keys of one namespace, for messages.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub list: &'static str,
    pub mask: &'static str,
    pub add: &'static str,
    pub remove: &'static str,
}

pub const FEATURE_KEYS: Keys = Keys {
    list: "features",
    mask: "features_mask",
    add: "add_features",
    remove: "remove_features",
};

pub const PROTOCOL_KEYS: Keys = Keys {
    list: "protocol_features",
    mask: "protocol_features_mask",
    add: "add_protocol_features",
    remove: "remove_protocol_features",
};

pub fn error(origin: &str, position: Option<Position>, problem: Problem) -> TableError {
    TableError {
        origin: origin.to_string(),
        position,
        problem: Box::new(problem),
    }
}

fn at<T>(text: &str, value: &Spanned<T>) -> Position {
    line_col(text, value.span().start)
}

/// Parses the TOML and checks the schema version.
pub fn read(text: &str, origin: &str) -> Result<RawTable, TableError> {
    let raw: RawTable = toml::from_str(text).map_err(|e| {
        let message = e.message().trim_end().replace('\n', "; ");
        let position = e.span().map(|s| line_col(text, s.start));
        error(origin, position, Problem::Syntax(message))
    })?;
    if *raw.schema.get_ref() != 1 {
        return Err(error(
            origin,
            Some(at(text, &raw.schema)),
            Problem::Schema(*raw.schema.get_ref()),
        ));
    }
    if raw.profile.is_empty() {
        return Err(error(origin, None, Problem::Empty));
    }
    Ok(raw)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks ids and turns every name and mask into bits.
pub fn specs(raw: &RawTable, text: &str, origin: &str) -> Result<Vec<Spec>, TableError> {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(raw.profile.len());
    for p in &raw.profile {
        let id = p.id.get_ref();
        let id_at = at(text, &p.id);
        let fail = |problem| Err(error(origin, Some(id_at), problem));
        if !valid_id(id) {
            return fail(Problem::BadId { id: id.clone() });
        }
        if let Some(first_line) = first_seen.insert(id, id_at.0) {
            return fail(Problem::DuplicateId {
                id: id.clone(),
                first_line,
            });
        }
        let features = set_spec(p, Namespace::Virtio, text, origin)?;
        let protocol = set_spec(p, Namespace::Protocol, text, origin)?;
        out.push(Spec {
            id: id.clone(),
            id_at,
            description: p.description.clone(),
            parent: p
                .based_on
                .as_ref()
                .map(|b| (b.get_ref().clone(), at(text, b))),
            features,
            protocol,
            max_queue_pairs: p
                .max_queue_pairs
                .as_ref()
                .map(|v| (*v.get_ref(), at(text, v))),
            max_queue_size: p
                .max_queue_size
                .as_ref()
                .map(|v| (*v.get_ref(), at(text, v))),
        });
    }
    Ok(out)
}

fn set_spec(
    p: &RawProfile,
    ns: Namespace,
    text: &str,
    origin: &str,
) -> Result<SetSpec, TableError> {
    let (keys, list, mask, add, remove) = match ns {
        Namespace::Virtio => (
            FEATURE_KEYS,
            &p.features,
            &p.features_mask,
            &p.add_features,
            &p.remove_features,
        ),
        Namespace::Protocol => (
            PROTOCOL_KEYS,
            &p.protocol_features,
            &p.protocol_features_mask,
            &p.add_protocol_features,
            &p.remove_protocol_features,
        ),
    };
    let id = p.id.get_ref();
    let base = match (list, mask) {
        (Some(_), Some(m)) => {
            return Err(error(
                origin,
                Some(at(text, m)),
                Problem::ListAndMask {
                    id: id.clone(),
                    list_key: keys.list,
                    mask_key: keys.mask,
                },
            ))
        }
        (Some(names), None) => Some(
            edits(names, ns, keys.list, id, text, origin)?
                .iter()
                .fold(0, |acc, e| acc | e.mask),
        ),
        (None, Some(m)) => Some(features::parse_mask(m.get_ref()).map_err(|e| {
            error(
                origin,
                Some(at(text, m)),
                Problem::Mask {
                    id: id.clone(),
                    key: keys.mask,
                    error: e,
                },
            )
        })?),
        (None, None) => None,
    };
    Ok(SetSpec {
        keys,
        base,
        add: edits(add, ns, keys.add, id, text, origin)?,
        remove: edits(remove, ns, keys.remove, id, text, origin)?,
    })
}

fn edits(
    names: &[Spanned<String>],
    ns: Namespace,
    key: &'static str,
    id: &str,
    text: &str,
    origin: &str,
) -> Result<Vec<Edit>, TableError> {
    names
        .iter()
        .map(|name| {
            features::lookup(ns, name.get_ref())
                .map(|f| Edit {
                    mask: f.mask(),
                    name: f.name,
                    at: at(text, name),
                })
                .map_err(|e| {
                    error(
                        origin,
                        Some(at(text, name)),
                        Problem::Name {
                            id: id.to_string(),
                            key,
                            error: e,
                        },
                    )
                })
        })
        .collect()
}
