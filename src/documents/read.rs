//! Reading documents back (the gate's inputs), with errors that name the file
//! and the field at fault.

use serde::de::DeserializeOwned;

use super::{Catalog, Probe, Status, SCHEMA};

/// Which document a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `status --json` of a running port.
    Status,
    /// `capabilities --json` / `list-profiles --json` of a host.
    Capabilities,
    /// `probe --json` of any vhost-user backend.
    Probe,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Status => "a port's status (`vhost-compat status --json`)",
            Kind::Capabilities => "a host's capabilities (`vhost-compat capabilities --json`)",
            Kind::Probe => "a backend's probe (`vhost-compat probe --json`)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("{origin}: not valid JSON (line {line}, column {column}): {reason}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error(
        "{origin}: field `schema`: {found} is not supported; this version reads schema {SCHEMA}"
    )]
    Schema { origin: String, found: String },
    #[error("{origin}: expected {expected}, but this is {found}")]
    WrongKind {
        origin: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{origin}: expected {expected}, but this is no vhost-compat document (no `profile` or `profiles` field)")]
    Unknown {
        origin: String,
        expected: &'static str,
    },
    #[error("{origin}: field `{field}`: {reason}")]
    Field {
        origin: String,
        field: String,
        reason: String,
    },
}

/// What a JSON value looks like, judged by its fields.
fn kind_of(value: &serde_json::Value) -> Option<Kind> {
    let obj = value.as_object()?;
    if obj.contains_key("probe") {
        Some(Kind::Probe)
    } else if obj.contains_key("profiles") {
        Some(Kind::Capabilities)
    } else if obj.contains_key("profile") && obj.contains_key("negotiated") {
        Some(Kind::Status)
    } else {
        None
    }
}

/// Parses a document of one of the `accepted` kinds; returns its kind and
/// the JSON value to deserialize.
fn classify(
    text: &str,
    origin: &str,
    accepted: &[Kind],
    expected: &'static str,
) -> Result<(Kind, serde_json::Value), DocError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DocError::Syntax {
        origin: origin.to_string(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })?;
    match value.get("schema") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(SCHEMA)) => {}
        Some(other) => {
            return Err(DocError::Schema {
                origin: origin.to_string(),
                found: other.to_string(),
            })
        }
        None => {
            return Err(DocError::Field {
                origin: origin.to_string(),
                field: "schema".into(),
                reason: "missing".into(),
            })
        }
    }
    match kind_of(&value) {
        Some(k) if accepted.contains(&k) => Ok((k, value)),
        Some(k) => Err(DocError::WrongKind {
            origin: origin.to_string(),
            expected,
            found: k.name(),
        }),
        None => Err(DocError::Unknown {
            origin: origin.to_string(),
            expected,
        }),
    }
}

fn typed<T: DeserializeOwned>(value: serde_json::Value, origin: &str) -> Result<T, DocError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        DocError::Field {
            origin: origin.to_string(),
            field,
            reason: e.into_inner().to_string(),
        }
    })
}

/// What a migration starts from: a running port, or a probed backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceDoc {
    Status(Box<Status>),
    Probe(Box<Probe>),
}

/// Where a migration goes: a host's capabilities, or a probed backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DestDoc {
    Capabilities(Box<Catalog>),
    Probe(Box<Probe>),
}

const SOURCE: &str =
    "a port's status (`vhost-compat status --json`) or a probe (`vhost-compat probe --json`)";
const DEST: &str =
    "a host's capabilities (`vhost-compat capabilities --json`) or a probe (`vhost-compat probe --json`)";

pub fn status(text: &str, origin: &str) -> Result<Status, DocError> {
    let (_, value) = classify(text, origin, &[Kind::Status], Kind::Status.name())?;
    typed(value, origin)
}

pub fn capabilities(text: &str, origin: &str) -> Result<Catalog, DocError> {
    let (_, value) = classify(
        text,
        origin,
        &[Kind::Capabilities],
        Kind::Capabilities.name(),
    )?;
    typed(value, origin)
}

pub fn source(text: &str, origin: &str) -> Result<SourceDoc, DocError> {
    match classify(text, origin, &[Kind::Status, Kind::Probe], SOURCE)? {
        (Kind::Probe, v) => Ok(SourceDoc::Probe(Box::new(typed(v, origin)?))),
        (_, v) => Ok(SourceDoc::Status(Box::new(typed(v, origin)?))),
    }
}

pub fn destination(text: &str, origin: &str) -> Result<DestDoc, DocError> {
    match classify(text, origin, &[Kind::Capabilities, Kind::Probe], DEST)? {
        (Kind::Probe, v) => Ok(DestDoc::Probe(Box::new(typed(v, origin)?))),
        (_, v) => Ok(DestDoc::Capabilities(Box::new(typed(v, origin)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::Catalog;
    use crate::profiles::builtin;
    use crate::support::Support;

    fn caps_json() -> String {
        serde_json::to_string(&Catalog::new(&builtin().unwrap(), &Support::loopback())).unwrap()
    }

    #[test]
    fn a_capabilities_document_reads_back() {
        let doc = capabilities(&caps_json(), "caps.json").unwrap();
        assert_eq!(doc, Catalog::new(&builtin().unwrap(), &Support::loopback()));
    }

    #[test]
    fn the_wrong_document_is_named() {
        let err = status(&caps_json(), "caps.json").unwrap_err();
        assert!(matches!(err, DocError::WrongKind { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("caps.json: expected a port's status"),
            "{msg}"
        );
        assert!(msg.contains("this is a host's capabilities"), "{msg}");
        let unknown = capabilities("{\"schema\": 1, \"x\": 1}", "x.json").unwrap_err();
        assert!(matches!(unknown, DocError::Unknown { .. }));
    }

    #[test]
    fn truncated_json_is_refused_with_a_position() {
        let text = caps_json();
        let err = capabilities(&text[..text.len() / 2], "caps.json").unwrap_err();
        assert!(matches!(err, DocError::Syntax { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("caps.json: not valid JSON (line 1"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_schema_is_refused() {
        let text = caps_json().replacen("\"schema\":1", "\"schema\":2", 1);
        let err = capabilities(&text, "caps.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "caps.json: field `schema`: 2 is not supported; this version reads schema 1"
        );
    }

    #[test]
    fn a_mask_that_is_not_a_hex_string_names_its_field() {
        let mut value: serde_json::Value = serde_json::from_str(&caps_json()).unwrap();
        value["profiles"][2]["features"] = serde_json::json!(12345);
        let err = capabilities(&value.to_string(), "caps.json").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("caps.json: field `profiles[2].features`:"),
            "{msg}"
        );
        value["profiles"][2]["features"] = serde_json::json!("12345");
        let msg = capabilities(&value.to_string(), "caps.json")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("profiles[2].features") && msg.contains("0x"),
            "{msg}"
        );
    }
}
