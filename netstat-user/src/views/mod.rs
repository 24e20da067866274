//! Everything bnetstat prints. Views read events and models; they never
//! change them.

pub mod table;
pub mod trace;
pub mod watch;
