//! Wire framing: the PostgreSQL v3 message layout, the startup packet, and
//! builders for the few messages pgtenant writes itself.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;
