//! fixture plugins
