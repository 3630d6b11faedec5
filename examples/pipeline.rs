//! A transformer layer stack, token by token, with its tensors placed by
//! lifetime in a `Model` (weights loaded once and borrowed by the engine for
//! its whole life, activations in the scratch Tape cleared as each pass ends,
//! the KV cache in the history Tape cleared as each conversation ends),
//! against the same computation on standard allocations (a fresh `Vec` per
//! activation, a `Vec` per cache). Both give bit-identical outputs; the
//! example prints both times and the ratio.
//!
//! Run with `cargo run --release --example pipeline`.

use std::time::{Duration, Instant};

use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec;
use unimem::{Error, Model, Tape};

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

/// Standard allocation: every tensor a fresh `Vec` from the global
/// allocator (the weights loaded once, as the engine's are).
fn standard(weights: &[[Vec<f32, Global>; 6]]) -> (Duration, std::vec::Vec<std::vec::Vec<f32>>) {
    let started = Instant::now();
    let mut outputs = std::vec::Vec::new();
    for c in 0..CONVERSATIONS {
        let (mut keys, mut values) = (caches(Global), caches(Global));
        let mut x = vec![0.0f32; D];
        for t in 0..TOKENS {
            feed(&mut x, c, t);
            forward(weights, &mut x, &mut keys, &mut values, Global);
        }
        outputs.push(x);
    }
    (started.elapsed(), outputs)
}

/// An inference engine over a [`Model`]: the weights are loaded once into
/// its weights Tape and borrowed for the engine's whole life; each
/// conversation's caches live in the history Tape and each token's
/// activations in the scratch Tape, cleared by the guards as they end.
struct Engine<'m> {
    model: &'m Model,
    weights: std::vec::Vec<[Vec<f32, &'m Tape>; 6]>,
}

impl<'m> Engine<'m> {
    fn load(model: &'m Model) -> Engine<'m> {
        Engine {
            model,
            weights: load_weights(model.weights()),
        }
    }

    /// One conversation: its caches borrow the `Talk`, each token's
    /// activations its `Pass`.
    fn converse(&self, c: usize) -> Result<std::vec::Vec<f32>, Error> {
        let talk = self.model.talk()?;
        let (mut keys, mut values) = (caches(talk.history()), caches(talk.history()));
        let mut x = vec![0.0f32; D];
        for t in 0..TOKENS {
            let pass = talk.pass()?;
            feed(&mut x, c, t);
            forward(
                &self.weights,
                &mut x,
                &mut keys,
                &mut values,
                pass.scratch(),
            );
        } // the pass ends: the scratch is cleared
        Ok(x)
    } // the conversation ends: the history is cleared

    fn run(&self) -> Result<(Duration, std::vec::Vec<std::vec::Vec<f32>>), Error> {
        let started = Instant::now();
        let outputs = (0..CONVERSATIONS)
            .map(|c| self.converse(c))
            .collect::<Result<_, _>>()?;
        Ok((started.elapsed(), outputs))
    }
}

fn main() -> Result<(), Error> {
    // Each Tape reserves its size and commits what is used: generous sizes
    // cost nothing.
    let model = Model::open(64 << 20, 16 << 20, 16 << 20)?;
    println!(
        "{LAYERS} layers of width {D} (feed-forward {FF}), {CONVERSATIONS} conversations of {TOKENS} tokens"
    );
    let engine = Engine::load(&model);
    let global_weights = load_weights(Global);
    // Each path runs once to warm up, then is timed; both keep their
    // weights across the runs.
    let _ = (standard(&global_weights), engine.run()?);
    let (std_time, std_out) = standard(&global_weights);
    let (unimem_time, unimem_out) = engine.run()?;
    assert_eq!(std_out, unimem_out, "both runs compute the same thing");
    println!("standard allocation: {std_time:?}");
    println!("unimem Model:        {unimem_time:?}");
    println!(
        "ratio (Model ÷ standard): {:.3}",
        unimem_time.as_secs_f64() / std_time.as_secs_f64()
    );
    Ok(())
}
