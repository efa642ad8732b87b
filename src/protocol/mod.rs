//! Wire framing: the PostgreSQL v3 message layout, the startup packet, and
//! builders for the few messages pgtenant writes itself.

pub(crate) mod backend;
pub mod frame;
pub(crate) mod frontend;
pub(crate) mod messages;
pub mod startup;
