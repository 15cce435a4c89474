//! nodeinit host library
pub mod boot;
pub mod check;
pub mod cli;
pub mod demo;
pub mod logging;
pub mod inspect;
pub mod kernel_modules;
pub mod loader;
pub mod config;
pub mod pid1;
pub mod agent;
pub mod sandbox;
