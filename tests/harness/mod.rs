//! A small test runner for the tests that need a component the machine may
//! not have (a GPU, a Vulkan device, UCX, huge pages): a test that finds it
//! missing is reported as `ignored` with the reason, in a plain `cargo test`
//! run, instead of passing without having checked anything. libtest decides
//! `#[ignore]` when it compiles; this decides when the test runs.
//!
//! Each file using it sets `harness = false` in Cargo.toml and ends with
//! `harness::main(&[test!(name), ...])`. A test calls [`skip`] (through a
//! component's helper) when the component is missing; with the component's
//! `UNIMEM_REQUIRE_*` variable set (CI sets it where the component is
//! installed), [`component`] fails the test instead. The runner takes the
//! arguments cargo and cargo-nextest pass: name filters, `--exact`, `--list`
//! (with `--format terse`), `--ignored`, `--include-ignored`, `--skip`;
//! others (`--nocapture`, `--test-threads`, `-q`) are accepted and have no
//! effect: tests run one after another, their output uncaptured.
#![allow(dead_code)]

use std::any::Any;
use std::fmt::Display;
use std::panic::{self, AssertUnwindSafe};

/// A test: its name and its function.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
}

/// `test!(function)`: the test of that name.
#[macro_export]
macro_rules! test {
    ($name:ident) => {
        $crate::harness::Test {
            name: stringify!($name),
            run: $name,
        }
    };
}

/// What a skipped test unwinds with.
struct Skip(String);

/// Ends the running test as skipped: it is reported `ignored` with `why`.
/// (`resume_unwind` runs no panic hook, so nothing else is printed.)
pub fn skip(why: impl Display) -> ! {
    panic::resume_unwind(Box::new(Skip(why.to_string())))
}

/// Whether the environment variable `var` asks for a component: set to
/// anything but empty or `0`. The one rule every `UNIMEM_REQUIRE_*` follows.
pub fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A component the test needs: `Ok` gives it; `Err` skips the test, or
/// fails it if `var` asks for the component.
pub fn component<T, E: Display>(var: &str, what: &str, found: Result<T, E>) -> T {
    match found {
        Ok(value) => value,
        Err(error) if required(var) => panic!("{var} is set, yet {what}: {error}"),
        Err(error) => skip(format_args!(
            "{what}: {error} ({var}=1 makes this a failure)"
        )),
    }
}

/// Runs the tests the arguments select and exits with the result, as
/// libtest does.
pub fn main(tests: &[Test]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list, mut ignored_only, mut include_ignored) = (false, false, false, false);
    let mut at = 0;
    while at < args.len() {
        match args[at].as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => ignored_only = true,
            "--include-ignored" => include_ignored = true,
            "--skip" => {
                at += 1;
                skips.extend(args.get(at).cloned());
            }
            // Options with a value that change nothing here.
            "--format" | "--test-threads" | "--color" | "-Z" | "--logfile" => at += 1,
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
        at += 1;
    }
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|test| {
            let matches = |f: &String| {
                if exact {
                    test.name == f
                } else {
                    test.name.contains(f.as_str())
                }
            };
            (filters.is_empty() || filters.iter().any(matches))
                && !skips.iter().any(|s| test.name.contains(s.as_str()))
        })
        .collect();
    if list {
        // Nothing here is ignored before it runs.
        if !ignored_only {
            for test in &selected {
                println!("{}: test", test.name);
            }
        }
        return;
    }
    let _ = include_ignored;
    if ignored_only {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n"
        );
        return;
    }
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut failed, mut ignored) = (Vec::new(), Vec::new(), 0);
    for test in &selected {
        match panic::catch_unwind(AssertUnwindSafe(test.run)) {
            Ok(()) => {
                println!("test {} ... ok", test.name);
                passed.push(test.name);
            }
            Err(payload) => match payload.downcast::<Skip>() {
                Ok(skip) => {
                    println!("test {} ... ignored, {}", test.name, skip.0);
                    ignored += 1;
                }
                Err(payload) => {
                    println!("test {} ... FAILED: {}", test.name, message(&*payload));
                    failed.push(test.name);
                }
            },
        }
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        passed.len(),
        failed.len(),
        ignored,
        tests.len() - selected.len(),
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// A panic's message.
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}
