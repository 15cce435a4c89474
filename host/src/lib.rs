//! nodeinit host library
