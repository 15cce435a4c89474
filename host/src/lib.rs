//! nodeinit host library
pub mod agent;
pub mod boot;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod inspect;
pub mod keeper;
pub mod kernel_modules;
pub mod link;
pub mod loader;
pub mod logging;
pub mod pid1;
pub mod placement;
pub mod probe;
pub mod sandbox;
pub mod worker;
