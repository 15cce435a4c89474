//! The `nodeinit` binary: argument dispatch only; everything else lives in
//! the library.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage:
  nodeinit plugin inspect PATH...   describe plugin files and whether they load";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["plugin", "inspect", paths @ ..] if !paths.is_empty() => {
            let paths: Vec<&Path> = paths.iter().map(Path::new).collect();
            let (report, ok) = nodeinit::inspect::inspect(&paths);
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
