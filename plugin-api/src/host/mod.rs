//! The host's side of the boundary: opening a plugin library and reading its
//! root module ([`PluginLibrary`]), and building the [`crate::HostServices`]
//! each constructor receives.
//!
//! Owns everything `abi_stable` does at load time, so the host never names
//! `abi_stable`. Never checks the file itself (owner, mode, ELF headers):
//! that is the nodeinit loader's job, before [`PluginLibrary::open`].

mod library;
mod services;

pub use library::{summarize_abi_report, OpenError, PluginLibrary};
