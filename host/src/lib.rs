//! nodeinit host library
pub mod agent;
pub mod boot;
pub mod check;
pub mod cli;
pub mod config;
pub mod console_text;
pub mod demo;
pub mod inspect;
pub mod kernel_modules;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod pid1;
pub mod sandbox;
