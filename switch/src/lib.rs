//! vswitch's switch: the userspace datapath and its control state.
//!
//! Layers, from the wire up:
//! - [`wire`]: MAC addresses, the virtio-net header, the one Ethernet parse per frame (smoltcp's
//!   checked views for everything above Ethernet);
//! - [`frame`]: the preallocated frame buffer with headroom;
//! - [`fdb`], [`ipam`], [`local`]: pure tables and responders, time passed in;
//! - [`port`], [`capture`], [`counters`]: ports with their counters and capture taps;
//! - [`datapath`]: the run-to-completion worker threads;
//! - [`control`]: networks, endpoints and snapshots for the workers, and durable file
//!   replacement (state, saved connections, resolv.conf);
//! - [`sys`]: the only module with `unsafe` (TAP ioctls, setns, netlink, epoll).

pub mod capture;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod dns;
pub mod error;
pub mod fdb;
pub mod frame;
pub mod gso;
pub mod ipam;
pub mod local;
pub mod model;
pub mod neigh;
pub mod port;
mod router;
pub mod sys;
mod txbatch;
pub mod wire;

pub use control::{Options, Switch};
pub use error::Error;
