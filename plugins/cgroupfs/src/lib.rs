//! cgroupfs backend (in progress)
