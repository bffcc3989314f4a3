//! The README's stacking example: a two-provider stack with all four layers in at most 15
//! lines of user code. (The block itself compiles and runs as a doc test of the facade,
//! `src/lib.rs` includes the README.)

const README: &str = include_str!("../README.md");

/// The lines of the README's first Rust block between `// The stack.` and `// Use it.`
/// that are code: not blank, not comments.
fn stack_lines() -> Vec<&'static str> {
    let block = README
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README has a Rust block");
    let mut lines = block.lines().map(str::trim);
    lines
        .by_ref()
        .find(|line| *line == "// The stack.")
        .expect("the block marks where the stack starts");
    lines
        .take_while(|line| *line != "// Use it.")
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .collect()
}

#[test]
fn the_stacking_example_builds_two_providers_with_four_layers_in_15_lines() {
    let lines = stack_lines();
    assert!(
        lines.len() <= 15,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let code = lines.join("\n");
    for layer in [".circuit_breaker(", ".retries(", ".degrade(", ".failover("] {
        assert!(code.contains(layer), "the stack has no {layer}");
    }
    assert_eq!(code.matches(".provider(protect(").count(), 2, "{code}");
}
