//! The secure session: handshake, key schedule and sealed frames. Sans-IO.

pub mod cipher;
pub mod frame;
pub mod handshake;
pub mod handshake_stream;
pub mod node_info;
pub(crate) mod transcript;

#[cfg(test)]
mod tests;

pub use cipher::CipherSuite;
pub use frame::{FrameOpener, FrameSealer};
pub use handshake::{Established, HandshakeConfig};
pub use handshake_stream::Handshake;
pub use node_info::NodeInfo;
