//! squashfs backend (in progress)
