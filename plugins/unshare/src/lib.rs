//! unshare backend (in progress)
