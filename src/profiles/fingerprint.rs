//! Fingerprints: a short, stable hash of what a profile offers.
//!
//! Only resolved content goes in (masks and limits), in a fixed textual form,
//! so the same offer always hashes the same however the TOML spelled it, and
//! any change to it changes the hash. The domain string versions the format.

use sha2::{Digest, Sha256};

use super::Profile;

const DOMAIN: &str = "vhost-compat profile fingerprint v1";

pub fn of(profile: &Profile) -> String {
    let canonical = format!(
        "{DOMAIN}\nfeatures={:#018x}\nprotocol_features={:#018x}\nmax_queue_pairs={}\nmax_queue_size={}\n",
        profile.features, profile.protocol_features, profile.max_queue_pairs, profile.max_queue_size
    );
    let digest = Sha256::digest(canonical.as_bytes());
    // 64 bits tell apart any two tables an operator will ever compare.
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
