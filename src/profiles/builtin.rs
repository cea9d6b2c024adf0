//! The table compiled into the binary from `profiles/builtin.toml`.

use super::{ProfileTable, TableError};

pub const BUILTIN_ORIGIN: &str = "built-in table";
pub const BUILTIN_TOML: &str = include_str!("../../profiles/builtin.toml");

/// The built-in table. Its validity is checked by the test suite, so an error
/// here means the binary was built from a broken tree.
pub fn builtin() -> Result<ProfileTable, TableError> {
    ProfileTable::parse(BUILTIN_TOML, BUILTIN_ORIGIN)
}
