//! The README's global Tape, as written there, run as a program's whole heap.
//! CI runs it as root and as an ordinary user with an 8 MiB memlock limit.

mod common;

// README begin
use unimem::Tape;

// Every allocation of the program in one Block of 1 GiB of address space,
// committed (and pinned, as far as RLIMIT_MEMLOCK allows) as it is used:
#[global_allocator]
static HEAP: Tape = Tape::lazy(1 << 30);

fn main() {
    let mut v = vec![1, 2, 3];
    v.push(4);
    assert!(HEAP.owns(v.as_ptr()));
    let words: Vec<String> = (0..1_000_000).map(|i| format!("word {i}")).collect();
    assert!(HEAP.owns(words.as_ptr()));
    let block = HEAP.block();
    println!(
        "{} MiB committed of {} MiB, {} MiB of it locked",
        block.committed() >> 20,
        block.capacity() >> 20,
        block.locked() >> 20
    );
}
// README end

#[test]
fn the_readme_snippet_runs() {
    main();
    assert!(HEAP.committed() >= 2 << 20, "it grew past its first step");
}

#[test]
fn the_readme_shows_this_code() {
    common::readme::assert_in_readme(include_str!("readme_tape.rs"));
}
