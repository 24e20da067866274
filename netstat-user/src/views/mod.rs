//! Everything bnetstat prints. Views read events and models; they never
//! change them.

pub mod interfaces;
pub mod routes;
pub mod table;
pub mod trace;
pub mod unix;
pub mod watch;
