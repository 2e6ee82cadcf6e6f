//! How the engine writes the structures it persists for itself (log records
//! and snapshots): MessagePack with structs as arrays of their fields in
//! declaration order ([`Fields::Positional`]), or, as older versions did, as
//! maps of field names ([`Fields::Named`]).
//!
//! Decoding needs no flag: a derived `Deserialize` reads a struct from either
//! shape. What the positional shape demands of every persisted struct is in
//! `docs/architecture.md` ("Positional fields"): a new field goes last with
//! `serde(default)`, no field skips itself when empty
//! (`skip_serializing_if`), and reordering or removing a field needs a new
//! format. The wire protocol is not written this way: its messages are maps
//! of field names (`docs/protocol.md`), so other languages' clients and
//! later versions can add fields anywhere.

use serde::Serialize;

/// How structs are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fields {
    /// Maps of field names: what logs and snapshots of older versions hold.
    /// Shards no longer write it; kept for compatibility tests and the
    /// benchmarks that compare the two.
    Named,
    /// Arrays of fields in declaration order: what shards write. A field name
    /// costs its bytes in every struct written, and in the engine's records
    /// and snapshots they were a fifth to two fifths of the bytes.
    #[default]
    Positional,
}

impl Fields {
    /// Writes `value` to `out` (e.g. appends it to a `Vec<u8>`), structs
    /// written as `self` says.
    pub fn write<W: std::io::Write + ?Sized, T: Serialize + ?Sized>(
        self,
        out: &mut W,
        value: &T,
    ) -> Result<(), rmp_serde::encode::Error> {
        match self {
            Fields::Named => rmp_serde::encode::write_named(out, value),
            Fields::Positional => rmp_serde::encode::write(out, value),
        }
    }
}
