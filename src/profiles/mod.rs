//! Compatibility profiles: the versioned table of what a port may offer.
//!
//! A table is TOML (`schema = 1`, `[[profile]]` entries in release order).
//! Loading it parses names into masks, resolves `based_on` inheritance,
//! enforces the specifications' rules and gives each profile a fingerprint of
//! its resolved content. Nothing here does I/O beyond reading the text given.

mod builtin;
mod error;
mod fingerprint;
mod resolve;
mod source;
mod spec;
mod validate;

#[cfg(test)]
mod tests;

pub use builtin::{builtin, BUILTIN_ORIGIN, BUILTIN_TOML};
pub use error::{Problem, TableError};

use crate::features::registry::{LOG_ALL, PROTO_LOG_SHMFD};

/// A profile with inheritance resolved: exactly what a port offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub id: String,
    pub description: String,
    /// Virtio and vhost feature bits (`GET_FEATURES`).
    pub features: u64,
    /// vhost-user protocol feature bits (`GET_PROTOCOL_FEATURES`).
    pub protocol_features: u64,
    pub max_queue_pairs: u16,
    pub max_queue_size: u16,
}

impl Profile {
    /// A stable hash of the resolved content, independent of id, description
    /// and of how the TOML spelled it.
    pub fn fingerprint(&self) -> String {
        fingerprint::of(self)
    }

    /// The first rule of a table this content breaks (a spec dependency,
    /// a limit), for content that did not come from a table, such as a probe.
    pub fn rule_violation(&self) -> Option<String> {
        validate::problem(self).map(|p| p.to_string())
    }

    /// Whether a running port with this profile can be live-migrated: the
    /// frontend needs `LOG_ALL` and a shared-memory dirty log.
    pub fn is_migratable(&self) -> bool {
        self.features & (1 << LOG_ALL) != 0 && self.protocol_features & (1 << PROTO_LOG_SHMFD) != 0
    }
}

/// A loaded table: profiles in release order, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileTable {
    /// Where the table came from: a file name or `built-in table`.
    pub origin: String,
    pub profiles: Vec<Profile>,
}

impl ProfileTable {
    /// Parses and validates a table. `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TableError> {
        let raw = spec::read(text, origin)?;
        let specs = spec::specs(&raw, text, origin)?;
        let profiles = resolve::resolve(&specs, origin)?;
        for (profile, spec) in profiles.iter().zip(&specs) {
            validate::check(profile, spec, origin)?;
        }
        Ok(ProfileTable {
            origin: origin.to_string(),
            profiles,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The newest profile (last in table order) that `runnable` accepts.
    pub fn newest<F>(&self, mut runnable: F) -> Option<&Profile>
    where
        F: FnMut(&Profile) -> bool,
    {
        self.profiles.iter().rev().find(|p| runnable(p))
    }
}
