//! Compiles the compute shaders in `shaders/` (WGSL) to the SPIR-V files
//! committed beside them, with naga, and checks that those files are what
//! the sources compile to, byte for byte.
//!
//! ```sh
//! cargo run --manifest-path tools/spvgen/Cargo.toml -- write   # regenerate shaders/*.spv
//! cargo run --manifest-path tools/spvgen/Cargo.toml -- check   # fail if any .spv is stale
//! ```
//!
//! The output is reproducible: naga's version is pinned by this tool's
//! `Cargo.lock`, and the writer's flags are set explicitly (naga's default
//! adds debug names when naga itself is built with debug assertions, so a
//! debug and a release build of this tool would otherwise disagree).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The SPIR-V words of the compute shader in the WGSL file `path`.
fn compile(path: &Path) -> Result<Vec<u32>, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let module = naga::front::wgsl::parse_str(&source)
        .map_err(|e| e.emit_to_string_with_path(&source, &path.display().to_string()))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(&source))?;
    let options = naga::back::spv::Options {
        // SPIR-V 1.0: what every Vulkan 1.0+ driver takes.
        lang_version: (1, 0),
        flags: naga::back::spv::WriterFlags::empty(),
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| e.to_string())
}

/// The shaders' sources, in name order.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    sources.sort();
    sources
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode != "write" && mode != "check" {
        eprintln!("usage: spvgen write | check");
        return ExitCode::from(2);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut stale = 0;
    for source in sources(&dir) {
        let spirv = source.with_extension("spv");
        let bytes: Vec<u8> = match compile(&source) {
            Ok(words) => words.iter().flat_map(|w| w.to_le_bytes()).collect(),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        };
        if mode == "write" {
            std::fs::write(&spirv, &bytes).unwrap();
            println!("wrote {} ({} bytes)", spirv.display(), bytes.len());
        } else if std::fs::read(&spirv).ok().as_deref() == Some(&bytes[..]) {
            println!("ok {} ({} bytes)", spirv.display(), bytes.len());
        } else {
            eprintln!(
                "stale: {} is not what {} compiles to; run `cargo run --manifest-path tools/spvgen/Cargo.toml -- write`",
                spirv.display(),
                source.display()
            );
            stale += 1;
        }
    }
    if stale == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
