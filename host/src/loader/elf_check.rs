//! The ELF check before `dlopen`: a 64-bit little-endian shared object for
//! this machine whose every `PT_LOAD` segment lies inside the file. A file
//! shorter than its segments would kill the process with `SIGBUS` inside
//! `dlopen` — for PID 1, a kernel panic.
//!
//! Reads only the ELF header and program headers (through `object`'s lazy
//! `ReadCache`), never the whole file.

use std::fs::File;

use object::elf::{FileHeader64, ET_DYN, PT_INTERP, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::read::ReadCache;
use object::Endianness;

use super::LoadFailure;

/// This machine's `e_machine`.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = object::elf::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = object::elf::EM_AARCH64;

/// Checks the headers of `file` (of length `len`).
pub fn check_elf(file: &File, len: u64) -> Result<(), LoadFailure> {
    let bad = |why: String| LoadFailure::NotElf(why);
    if len == 0 {
        return Err(bad("the file is empty".to_owned()));
    }
    let cache = ReadCache::new(file);
    let header = FileHeader64::<Endianness>::parse(&cache).map_err(|_| {
        bad(format!(
            "not a 64-bit ELF file ({len} bytes, no valid ELF header)"
        ))
    })?;
    let endian = header
        .endian()
        .map_err(|_| bad("unknown ELF byte order".to_owned()))?;
    if endian != Endianness::Little {
        return Err(bad(
            "big-endian ELF; this machine is little-endian".to_owned()
        ));
    }
    let machine = header.e_machine(endian);
    if machine != HOST_MACHINE {
        return Err(LoadFailure::WrongMachine(machine));
    }
    if header.e_type(endian) != ET_DYN {
        return Err(bad(format!(
            "ELF type {} is not a shared object (ET_DYN)",
            header.e_type(endian)
        )));
    }
    let segments = header
        .program_headers(endian, &cache)
        .map_err(|e| LoadFailure::Truncated(format!("program headers unreadable: {e}")))?;
    if segments.is_empty() {
        return Err(bad("no program headers".to_owned()));
    }
    for seg in segments {
        if seg.p_type(endian) == PT_INTERP {
            return Err(LoadFailure::Executable);
        }
        if seg.p_type(endian) == PT_LOAD {
            let end = seg.p_offset(endian).checked_add(seg.p_filesz(endian));
            match end {
                Some(end) if end <= len => {}
                _ => {
                    return Err(LoadFailure::Truncated(format!(
                        "a PT_LOAD segment ends at byte {} but the file has {len} bytes",
                        end.map_or_else(|| "beyond 2^64".to_owned(), |e| e.to_string())
                    )))
                }
            }
        }
    }
    // Linkers put the section header table at the very end: a file cut
    // anywhere (even past the last segment, in debug info) loses it.
    let shoff = header.e_shoff(endian);
    if shoff != 0 {
        let table = u64::from(header.e_shnum(endian)) * u64::from(header.e_shentsize(endian));
        match shoff.checked_add(table) {
            Some(end) if end <= len => {}
            _ => {
                return Err(LoadFailure::Truncated(format!(
                    "the section header table ends at byte {} but the file has {len} bytes",
                    shoff.saturating_add(table)
                )))
            }
        }
    }
    Ok(())
}
