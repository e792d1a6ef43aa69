//! vswitch's switch: the userspace datapath and its control state.
//!
//! Layers, from the wire up:
//! - [`wire`] (the `vswitch-wire` crate, re-exported): every header as a checked view, the one
//!   checksum module;
//! - [`frame`]: the preallocated frame buffer with headroom;
//! - [`fdb`], [`neigh`], [`ipam`], [`local`], [`dns`]: pure tables and responders, time passed
//!   in;
//! - [`port`], [`capture`], [`counters`]: ports with their counters and capture taps;
//! - [`datapath`]: the run-to-completion worker threads, one file per stage (receive,
//!   classify, local answers and switching, route with NAT's verdict, transmit);
//! - [`control`]: the control plane, one concern per file: the [`Switch`] facade (lifecycle,
//!   the control lock), the state model and its checks, the verbs (networks, endpoints, uplink
//!   and publishing), the snapshot for the workers, device plumbing, persistence (state file,
//!   saved connections, durable writes), resolv.conf, read-only views and, with feature
//!   `harness`, the device-less entries for fuzzing and tests;
//! - [`sys`]: the only module with `unsafe` (TAP ioctls, setns, netlink, epoll).

pub mod capture;
pub mod cluster;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod dns;
pub mod error;
pub mod events;
pub mod fdb;
pub mod frame;
pub mod ipam;
pub mod local;
pub mod model;
pub mod neigh;
pub mod packet_spec;
pub mod port;
pub mod sys;
mod txbatch;

pub use ::wire;
pub use control::{Options, Switch};
pub use error::Error;
