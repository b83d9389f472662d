//! `cargo xtask test`: what CI checks, cheapest first, stopping at the first failure; the
//! kernel matrix (Debian's 5.10, 6.1 and 6.12 under QEMU) last.

use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::{
    command::{self, cargo},
    kmatrix, root, setup,
};

/// The kernel crate is `#![no_std]`, `#![no_main]` with its own panic handler, so it cannot
/// build for the host; rstwatch's build script compiles it for the BPF target whenever clippy
/// or the tests build rstwatch.
const EBPF_CRATE: &str = "rstwatch-ebpf";

pub fn run(cargo_test_args: &[String], kernel_matrix: bool) -> Result<()> {
    if !root::is_root() {
        bail!(
            "cargo xtask test must run as root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN): \
             re-run with sudo"
        );
    }
    let mut timings = Timings::default();
    timings.step("setup", || setup::run(false))?;
    timings.step("fmt", || {
        command::run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    timings.step("clippy", || {
        command::run(
            cargo()
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--exclude",
                    EBPF_CRATE,
                ])
                .args(["--", "-D", "warnings"]),
        )
    })?;
    timings.step("tests", || {
        let mut counts = TestCounts::default();
        let result = command::run_reading_stdout(
            cargo()
                .args(["test", "--workspace", "--exclude", EBPF_CRATE])
                .args(cargo_test_args),
            |line| counts.add_result_line(line),
        );
        println!("\n{}", counts.line());
        result
    })?;
    if kernel_matrix {
        timings.step("kernel matrix", || {
            kmatrix::run(None, false, &kmatrix::cache_dir(None))
        })?;
    }
    println!("summary: {}", timings.steps.join(", "));
    Ok(())
}

/// How long each step took, for the closing summary.
#[derive(Default)]
struct Timings {
    steps: Vec<String>,
}

impl Timings {
    fn step(&mut self, name: &str, action: impl FnOnce() -> Result<()>) -> Result<()> {
        let start = Instant::now();
        action().with_context(|| format!("cargo xtask test: {name} failed"))?;
        let seconds = start.elapsed().as_secs_f64();
        self.steps.push(format!("{name} {seconds:.1} s"));
        Ok(())
    }
}

/// Test counts added up over every test binary `cargo test` ran.
#[derive(Debug, Default, PartialEq, Eq)]
struct TestCounts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestCounts {
    /// Adds a libtest closing line such as
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`;
    /// other lines are ignored.
    fn add_result_line(&mut self, line: &str) {
        let Some(result) = line.strip_prefix("test result: ") else {
            return;
        };
        let Some((_verdict, fields)) = result.split_once(". ") else {
            return;
        };
        for field in fields.split("; ") {
            let Some((count, what)) = field.split_once(' ') else {
                continue;
            };
            let total = match what {
                "passed" => &mut self.passed,
                "failed" => &mut self.failed,
                "ignored" => &mut self.ignored,
                _ => continue,
            };
            *total += count.parse::<u64>().unwrap_or(0);
        }
    }

    /// One closing line for the whole run; ignored tests count as skipped.
    fn line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_test_binaries() {
        let mut counts = TestCounts::default();
        for line in [
            "running 3 tests",
            "test setup::tests::x ... ok",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.00s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 1.20s",
        ] {
            counts.add_result_line(line);
        }
        assert_eq!(
            counts,
            TestCounts {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
        assert_eq!(counts.line(), "tests: 5 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn output_of_a_test_is_not_a_result_line() {
        let mut counts = TestCounts::default();
        counts.add_result_line("my test printed: test result: ok. 9 passed;");
        assert_eq!(counts, TestCounts::default());
    }
}
