//! A transformer layer stack, token by token, with its tensors placed by
//! lifetime in a `Layout` (weights once, activations in the scratch Tape
//! cleared per token, the KV cache in the history Tape cleared per
//! conversation), against the same computation on standard allocations (a
//! fresh `Vec` per activation, a `Vec` per cache). Both give bit-identical
//! outputs; the example prints both times and the ratio.
//!
//! Run with `cargo run --release --example pipeline`.

use std::time::{Duration, Instant};

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec;
use unimem::{BlockOptions, Layout, Pinning};

const D: usize = 128; // model width
const FF: usize = 512; // feed-forward width
const LAYERS: usize = 4;
const TOKENS: usize = 64; // per conversation
const CONVERSATIONS: usize = 16;

/// The sizes of one layer's matrices: q, k, v, o, up, down.
const SHAPES: [usize; 6] = [D * D, D * D, D * D, D * D, D * FF, FF * D];

/// `y = x · w` for a row-major `w` of `x.len()` rows.
fn matmul(x: &[f32], w: &[f32], y: &mut [f32]) {
    let cols = y.len();
    y.fill(0.0);
    for (i, &xi) in x.iter().enumerate() {
        for (yj, &wij) in y.iter_mut().zip(&w[i * cols..(i + 1) * cols]) {
            *yj += xi * wij;
        }
    }
}

/// Deterministic pseudo-random weights.
fn weight(layer: usize, matrix: usize, i: usize) -> f32 {
    let h = (layer * 7919 + matrix * 104_729 + i).wrapping_mul(2_654_435_761) % 1000;
    (h as f32 / 1000.0 - 0.5) * 0.1
}

/// Every layer's six matrices, allocated in `alloc`.
fn load_weights<A: Allocator + Copy>(alloc: A) -> std::vec::Vec<[Vec<f32, A>; 6]> {
    (0..LAYERS)
        .map(|l| {
            std::array::from_fn(|m| {
                let mut matrix = Vec::with_capacity_in(SHAPES[m], alloc);
                matrix.extend((0..SHAPES[m]).map(|i| weight(l, m, i)));
                matrix
            })
        })
        .collect()
}

/// A zeroed activation of `n` floats in `alloc`.
fn tensor<A: Allocator>(n: usize, alloc: A) -> Vec<f32, A> {
    let mut v = Vec::with_capacity_in(n, alloc);
    v.resize(n, 0.0);
    v
}

/// One token through every layer: `x` is updated in place and this token's
/// keys and values are appended to the caches. Activations come from
/// `scratch`.
fn forward<W: Allocator, C: Allocator, S: Allocator + Copy>(
    weights: &[[Vec<f32, W>; 6]],
    x: &mut [f32],
    keys: &mut [Vec<f32, C>],
    values: &mut [Vec<f32, C>],
    scratch: S,
) {
    for (l, w) in weights.iter().enumerate() {
        let (mut q, mut k, mut v) = (tensor(D, scratch), tensor(D, scratch), tensor(D, scratch));
        matmul(x, &w[0], &mut q);
        matmul(x, &w[1], &mut k);
        matmul(x, &w[2], &mut v);
        keys[l].extend_from_slice(&k);
        values[l].extend_from_slice(&v);
        let t = keys[l].len() / D;
        let mut scores = tensor(t, scratch);
        let scale = 1.0 / (D as f32).sqrt();
        for (j, s) in scores.iter_mut().enumerate() {
            let key = &keys[l][j * D..(j + 1) * D];
            *s = q.iter().zip(key).map(|(a, b)| a * b).sum::<f32>() * scale;
        }
        let max = scores.iter().copied().fold(f32::MIN, f32::max);
        let mut total = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        let mut attended = tensor(D, scratch);
        for (j, &s) in scores.iter().enumerate() {
            let value = &values[l][j * D..(j + 1) * D];
            for (a, &b) in attended.iter_mut().zip(value) {
                *a += s / total * b;
            }
        }
        let mut out = tensor(D, scratch);
        matmul(&attended, &w[3], &mut out);
        for (xi, o) in x.iter_mut().zip(out.iter()) {
            *xi += o;
        }
        let mut hidden = tensor(FF, scratch);
        matmul(x, &w[4], &mut hidden);
        for h in hidden.iter_mut() {
            *h = h.max(0.0);
        }
        let mut down = tensor(D, scratch);
        matmul(&hidden, &w[5], &mut down);
        for (xi, d) in x.iter_mut().zip(down.iter()) {
            *xi += d;
        }
    }
}

/// The KV caches of one conversation, preallocated in `alloc`.
fn caches<A: Allocator + Copy>(alloc: A) -> std::vec::Vec<Vec<f32, A>> {
    (0..LAYERS)
        .map(|_| Vec::with_capacity_in(TOKENS * D, alloc))
        .collect()
}

/// The input of token `t` of conversation `c`.
fn feed(x: &mut [f32], c: usize, t: usize) {
    x[(c + t) % D] += 1.0;
}

/// Standard allocation: every tensor a fresh `Vec` from the global allocator.
fn standard() -> (Duration, std::vec::Vec<std::vec::Vec<f32>>) {
    let started = Instant::now();
    let weights = load_weights(Global);
    let mut outputs = std::vec::Vec::new();
    for c in 0..CONVERSATIONS {
        let (mut keys, mut values) = (caches(Global), caches(Global));
        let mut x = vec![0.0f32; D];
        for t in 0..TOKENS {
            feed(&mut x, c, t);
            forward(&weights, &mut x, &mut keys, &mut values, Global);
        }
        outputs.push(x);
    }
    (started.elapsed(), outputs)
}

/// unimem: weights in the weights Tape, caches in the history Tape (cleared
/// per conversation), activations in the scratch Tape (cleared per token).
fn placed(layout: &mut Layout) -> (Duration, std::vec::Vec<std::vec::Vec<f32>>) {
    let started = Instant::now();
    let split = layout.split();
    let weights = load_weights(split.weights);
    let mut outputs = std::vec::Vec::new();
    for c in 0..CONVERSATIONS {
        let (mut keys, mut values) = (caches(&*split.history), caches(&*split.history));
        let mut x = vec![0.0f32; D];
        for t in 0..TOKENS {
            feed(&mut x, c, t);
            forward(&weights, &mut x, &mut keys, &mut values, &*split.scratch);
            split.scratch.clear();
        }
        outputs.push(x);
        drop((keys, values));
        split.history.clear();
    }
    (started.elapsed(), outputs)
}

fn main() -> Result<(), unimem::Error> {
    // Room for the weights twice: the warm-up run loads them too, and a
    // weights Tape is never cleared.
    let weight_bytes = 2 * SHAPES.iter().sum::<usize>() * LAYERS * 4 + (1 << 16);
    let history_bytes = 2 * LAYERS * TOKENS * D * 4 + (1 << 16);
    let options = BlockOptions::new().pinning(Pinning::BestEffort);
    let mut layout = Layout::new_with(weight_bytes, 1 << 20, history_bytes, &options)?;
    println!(
        "{LAYERS} layers of width {D} (feed-forward {FF}), {CONVERSATIONS} conversations of {TOKENS} tokens"
    );
    // Each path runs once to warm up, then is timed.
    let _ = (standard(), placed(&mut layout));
    layout.clear_talk();
    let (std_time, std_out) = standard();
    let (unimem_time, unimem_out) = placed(&mut layout);
    assert_eq!(std_out, unimem_out, "both runs compute the same thing");
    println!("standard allocation: {std_time:?}");
    println!("unimem Layout:       {unimem_time:?}");
    println!(
        "ratio (Layout ÷ standard): {:.3}",
        unimem_time.as_secs_f64() / std_time.as_secs_f64()
    );
    Ok(())
}
