//! Everything bnetstat prints. Views read events and models; they never
//! change them.

pub mod audit;
pub mod interfaces;
pub mod life;
pub mod metrics;
pub mod routes;
pub mod stats;
pub mod table;
pub mod top;
pub mod trace;
pub mod unix;
pub mod watch;
