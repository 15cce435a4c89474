//! Console markers the VM harness greps for.
//!
//! Owns the one output format of the agent: `VMTEST PASS <check>: <detail>`,
//! `VMTEST FAIL <check>: <reason>`, `VMTEST INFO <what>: <text>` and a closing
//! `VMTEST DONE pass=N fail=M`. Lines go straight to `/dev/console` (falling
//! back to stderr), so they reach the serial log whatever stdio nodeinit gave
//! the agent. Must never decide what passes: checks do.

use std::fs::OpenOptions;
use std::io::Write;

/// Collects results and writes each one to the console as it happens.
pub struct Report {
    console: Option<std::fs::File>,
    passed: usize,
    failed: usize,
}

impl Report {
    /// Opens `/dev/console` for writing; stderr is used when it cannot be opened.
    pub fn open() -> Self {
        let console = OpenOptions::new().write(true).open("/dev/console").ok();
        Self {
            console,
            passed: 0,
            failed: 0,
        }
    }

    fn line(&mut self, text: &str) {
        let written = match self.console.as_mut() {
            Some(console) => writeln!(console, "{text}").is_ok(),
            None => false,
        };
        if !written {
            eprintln!("{text}");
        }
    }

    /// Records a check's outcome.
    pub fn check(&mut self, name: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(detail) => {
                self.passed += 1;
                self.line(&format!("VMTEST PASS {name}: {detail}"));
            }
            Err(reason) => {
                self.failed += 1;
                self.line(&format!("VMTEST FAIL {name}: {reason}"));
            }
        }
    }

    /// Prints information the harness shows but does not judge.
    pub fn info(&mut self, what: &str, text: &str) {
        for line in text.lines() {
            self.line(&format!("VMTEST INFO {what}: {line}"));
        }
    }

    /// Prints the closing line; returns whether every check passed.
    pub fn finish(&mut self) -> bool {
        let summary = format!("VMTEST DONE pass={} fail={}", self.passed, self.failed);
        self.line(&summary);
        self.failed == 0
    }
}
