//! Masks in JSON: `"0x..."` strings, because 64-bit numbers do not survive
//! every JSON parser.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::features;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Mask(pub u64);

impl Serialize for Mask {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&features::format_mask(self.0))
    }
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MaskVisitor;
        impl Visitor<'_> for MaskVisitor {
            type Value = Mask;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mask string such as \"0x140000000\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mask, E> {
                features::parse_mask(v).map(Mask).map_err(E::custom)
            }
        }
        d.deserialize_str(MaskVisitor)
    }
}
