//! Keeps a test binary and the README snippet it runs the same: the lines
//! of the file between `// README begin` and `// README end` must be one of
//! the README's Rust code blocks, line for line (the README's hidden `# `
//! lines left out).
#![allow(dead_code)]

const README: &str = include_str!("../../README.md");

/// The README's Rust code blocks, without hidden lines.
fn blocks() -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in README.lines() {
        match &mut current {
            None if line.starts_with("```rust") => current = Some(Vec::new()),
            None => {}
            Some(block) if line.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) if !(line.starts_with("# ") || line == "#") => {
                block.push(line.to_owned());
            }
            Some(_) => {}
        }
    }
    blocks
}

/// Asserts that the marked lines of `source` (a test file's own text) are a
/// code block of the README.
pub fn assert_in_readme(source: &str) {
    let marked: Vec<String> = source
        .lines()
        .skip_while(|line| !line.contains("// README begin"))
        .skip(1)
        .take_while(|line| !line.contains("// README end"))
        .map(str::to_owned)
        .collect();
    assert!(!marked.is_empty(), "no README markers in the file");
    assert!(
        blocks().contains(&marked),
        "the README has no block that reads:\n{}",
        marked.join("\n")
    );
}
