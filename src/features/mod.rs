//! Feature bits: names, masks and the dependencies the specs impose.
//!
//! Everything here is pure: the profile table, the gate and the backend all
//! use it to turn names into masks and back.

pub mod registry;

use std::fmt;

pub use registry::{Class, Feature, Namespace};

/// Why a feature name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unknown {} \"{name}\"{}", .namespace.noun(), suggestion_text(.suggestion))]
    Unknown {
        namespace: Namespace,
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error(
        "\"{name}\" is a {}, not a {}; list it under `{}`",
        .belongs.noun(),
        .namespace.noun(),
        .belongs.list_key()
    )]
    WrongNamespace {
        namespace: Namespace,
        belongs: Namespace,
        name: String,
    },
}

fn suggestion_text(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

/// Why a mask string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("\"{0}\" is not a mask: write it as a \"0x\" followed by 1 to 16 hex digits")]
    Malformed(String),
}

pub fn by_bit(ns: Namespace, bit: u32) -> Option<&'static Feature> {
    registry::table(ns).iter().find(|f| f.bit == bit)
}

fn matches(feature: &Feature, name: &str) -> bool {
    feature.name.eq_ignore_ascii_case(name)
        || feature.c_name.eq_ignore_ascii_case(name)
        || feature.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Looks a name up in one namespace: short name, C name or alias, any case.
pub fn lookup(ns: Namespace, name: &str) -> Result<&'static Feature, NameError> {
    if let Some(f) = registry::table(ns).iter().find(|f| matches(f, name)) {
        return Ok(f);
    }
    let other = match ns {
        Namespace::Virtio => Namespace::Protocol,
        Namespace::Protocol => Namespace::Virtio,
    };
    // Only full C names say unambiguously which space they belong to; a short
    // name like MQ exists in both and has already been looked up in `ns`.
    if registry::table(other)
        .iter()
        .any(|f| f.c_name.eq_ignore_ascii_case(name))
    {
        return Err(NameError::WrongNamespace {
            namespace: ns,
            belongs: other,
            name: name.to_string(),
        });
    }
    Err(NameError::Unknown {
        namespace: ns,
        name: name.to_string(),
        suggestion: closest(ns, name),
    })
}

/// The known name nearest to a misspelling, if any is near enough to help.
fn closest(ns: Namespace, name: &str) -> Option<&'static str> {
    let wanted = name.to_ascii_uppercase();
    registry::table(ns)
        .iter()
        .flat_map(|f| {
            std::iter::once(f.name)
                .chain(std::iter::once(f.c_name))
                .chain(f.aliases.iter().copied())
                .map(move |candidate| (f.name, candidate))
        })
        .map(|(short, candidate)| (short, strsim::jaro_winkler(&wanted, candidate)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(short, _)| short)
}

/// The mask of a list of names.
pub fn mask_of<'a, I>(ns: Namespace, names: I) -> Result<u64, NameError>
where
    I: IntoIterator<Item = &'a str>,
{
    names
        .into_iter()
        .try_fold(0u64, |mask, name| Ok(mask | lookup(ns, name)?.mask()))
}

/// The name printed for a bit the registry does not know.
pub fn unknown_bit_name(bit: u32) -> String {
    format!("UNKNOWN_BIT_{bit}")
}

/// The short name of every set bit, lowest bit first.
pub fn names_of(ns: Namespace, mask: u64) -> Vec<String> {
    bits(mask)
        .map(|bit| match by_bit(ns, bit) {
            Some(f) => f.name.to_string(),
            None => unknown_bit_name(bit),
        })
        .collect()
}

/// The set bits of a mask, lowest first.
pub fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |bit| mask & (1u64 << bit) != 0)
}

/// A mask as the documents carry it: `"0x"` and lowercase hex.
pub fn format_mask(mask: u64) -> String {
    format!("{mask:#x}")
}

/// Parses a `"0x..."` mask string.
pub fn parse_mask(text: &str) -> Result<u64, MaskError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .filter(|d| !d.is_empty() && d.len() <= 16 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| MaskError::Malformed(text.to_string()))?;
    u64::from_str_radix(digits, 16).map_err(|_| MaskError::Malformed(text.to_string()))
}

/// Bits of a mask written for people: `MRG_RXBUF (bit 15), RING_EVENT_IDX (bit 29)`.
pub struct Described {
    ns: Namespace,
    mask: u64,
}

pub fn describe(ns: Namespace, mask: u64) -> Described {
    Described { ns, mask }
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == 0 {
            return f.write_str("none");
        }
        for (i, bit) in bits(self.mask).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match by_bit(self.ns, bit) {
                Some(feature) => write!(f, "{} (bit {bit})", feature.name)?,
                None => write!(f, "bit {bit}")?,
            }
        }
        Ok(())
    }
}

/// A feature present in a mask without the feature(s) the spec makes it need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub feature: &'static Feature,
    /// The alternatives of which none is present.
    pub any_of: &'static [u32],
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.feature.namespace();
        let names: Vec<&str> = self
            .any_of
            .iter()
            .map(|bit| by_bit(ns, *bit).map_or("?", |d| d.name))
            .collect();
        write!(f, "{} requires {}", self.feature.name, names.join(" or "))
    }
}

/// Every dependency of the spec that a mask breaks.
pub fn unmet_requirements(ns: Namespace, mask: u64) -> Vec<Unmet> {
    registry::table(ns)
        .iter()
        .filter(|f| mask & f.mask() != 0)
        .flat_map(|f| {
            f.requires
                .iter()
                .filter(move |any_of| any_of.iter().all(|bit| mask & (1u64 << bit) == 0))
                .map(move |any_of| Unmet { feature: f, any_of })
        })
        .collect()
}

#[cfg(test)]
mod tests;
