//! Build script. It names the platform backends once, as cfgs every target
//! of the package sees (the library, its tests, examples and benches):
//!
//! - `unimem_linux`: the Linux Block backend (Linux, not under Miri);
//! - `unimem_apple`: the IOSurface backend (Apple platforms, not Miri);
//! - `unimem_portable`: the portable Block, from the system allocator
//!   (every other target, and Miri, which runs the allocators on it);
//! - `unimem_fork`: `fork` exists and its handlers are installed (Unix, not
//!   Miri).
//!
//! Without feature `ucx` it does nothing else, and the crate needs no C
//! library or compiler.
//!
//! With `ucx`: finds the system's UCX (`pkg-config ucx >= 1.13`), which also
//! tells cargo to link `libucp` and the libraries it needs, and compiles
//! `src/ucx/layout.c` against the installed headers: it records the sizes,
//! offsets and constants that the hand-written declarations in
//! `src/ucx/sys.rs` assume, for the test that compares them.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    backends();
    #[cfg(feature = "ucx")]
    ucx();
}

/// Sets the backend cfgs from the target (cargo's `CARGO_CFG_*`: a build
/// script runs on the host, so its own `cfg!` would describe the host).
fn backends() {
    for name in [
        "unimem_linux",
        "unimem_apple",
        "unimem_portable",
        "unimem_fork",
    ] {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let vendor = std::env::var("CARGO_CFG_TARGET_VENDOR").unwrap_or_default();
    let unix = std::env::var_os("CARGO_CFG_UNIX").is_some();
    let miri = std::env::var_os("CARGO_CFG_MIRI").is_some();
    let backend = match (os.as_str(), vendor.as_str(), miri) {
        (_, _, true) => "unimem_portable",
        ("linux", _, false) => "unimem_linux",
        (_, "apple", false) => "unimem_apple",
        _ => "unimem_portable",
    };
    println!("cargo::rustc-cfg={backend}");
    if unix && !miri {
        println!("cargo::rustc-cfg=unimem_fork");
    }
}

#[cfg(feature = "ucx")]
fn ucx() {
    println!("cargo::rerun-if-changed=src/ucx/layout.c");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    // The declarations follow the 1.13 API (`ucp_*_nbx`, the `memh` field of
    // `ucp_request_param_t`, `ucp_init_version(1, 13, ...)`).
    let library = match pkg_config::Config::new()
        .atleast_version("1.13")
        .probe("ucx")
    {
        Ok(library) => library,
        Err(error) => {
            // One clear message, not pkg-config's page of hints.
            let said = match &error {
                pkg_config::Error::Failure { output, .. }
                | pkg_config::Error::ProbeFailure { output, .. } => {
                    first_line(&String::from_utf8_lossy(&output.stderr))
                }
                pkg_config::Error::Command { cause, .. } => format!("could not run it: {cause}"),
                other => first_line(&other.to_string()),
            };
            println!(
                "cargo::error=feature `ucx` needs UCX 1.13 or later (libucp) with its headers and \
                 pkg-config file: install them (Debian, Ubuntu: apt-get install libucx-dev \
                 pkg-config), or set PKG_CONFIG_PATH to the directory holding the ucx.pc of a UCX \
                 installed elsewhere. pkg-config said: {said}"
            );
            return;
        }
    };
    let mut build = cc::Build::new();
    build.file("src/ucx/layout.c").warnings(true);
    for path in &library.include_paths {
        build.include(path);
    }
    build.compile("unimem_ucx_layout");
}

/// The first line of `text` that says something.
#[cfg(feature = "ucx")]
fn first_line(text: &str) -> String {
    let line = text.lines().map(str::trim).find(|line| !line.is_empty());
    line.unwrap_or("(nothing)").to_owned()
}
