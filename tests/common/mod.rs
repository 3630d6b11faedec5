//! A real std workload for the `#[global_allocator]` test binaries: string
//! formatting, Vec / HashMap / BTreeMap churn and threads, with every result
//! checked.
#![allow(dead_code)]

#[cfg(unimem_fork)]
pub mod fork;
pub mod readme;

use std::collections::{BTreeMap, HashMap};
use std::thread;

/// Formats, sorts and looks up `n` strings; returns their total length.
pub fn strings(n: usize) -> usize {
    let mut words: Vec<String> = (0..n)
        .map(|i| format!("item-{i:06}-{}", i * 31 % 97))
        .collect();
    words.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(words[0], format!("item-{:06}-{}", n - 1, (n - 1) * 31 % 97));
    let joined = words.join(",");
    assert_eq!(joined.matches(',').count(), n - 1);
    words.iter().map(String::len).sum()
}

/// Inserts and removes in a HashMap and a BTreeMap, `rounds` times over.
pub fn maps(rounds: usize) {
    let mut hash: HashMap<String, Vec<u64>> = HashMap::new();
    let mut tree: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..rounds {
        for i in 0..200u64 {
            let key = format!("k{}", (i * 7 + round as u64) % 300);
            hash.entry(key).or_default().push(i);
            tree.insert(i * 3 + round as u64, i.to_string());
        }
        hash.retain(|_, v| v.len() % 3 != 0);
        tree.retain(|k, _| k % 5 != 0);
    }
    for (key, values) in &hash {
        assert!(key.starts_with('k'));
        assert!(!values.is_empty() && values.len() % 3 != 0);
    }
    for (key, value) in &tree {
        assert_ne!(key % 5, 0);
        assert!(value.parse::<u64>().is_ok());
    }
}

/// Pushes, sorts and truncates vectors of different element sizes.
pub fn vectors(rounds: usize) {
    let mut small: Vec<u8> = Vec::new();
    let mut large: Vec<[u64; 8]> = Vec::new();
    for round in 0..rounds {
        small.extend((0..1000).map(|i| (i * round) as u8));
        large.push([round as u64; 8]);
        small.sort_unstable();
        small.truncate(500);
        assert!(small.windows(2).all(|w| w[0] <= w[1]));
    }
    assert_eq!(large.len(), rounds);
    assert!(
        large
            .iter()
            .enumerate()
            .all(|(i, a)| a.iter().all(|&x| x == i as u64))
    );
}

/// Runs all of the above on `threads` threads at once, passing results back
/// through channels.
pub fn threads(threads: usize, scale: usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn(move || {
                    let length = strings(scale);
                    maps(scale / 100 + 1);
                    vectors(scale / 10 + 1);
                    tx.send((t, length, vec![t; 100])).unwrap();
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let mut results: Vec<_> = rx.iter().collect();
    for handle in handles {
        handle.join().unwrap();
    }
    results.sort_unstable();
    assert_eq!(results.len(), threads);
    let expected = strings(scale);
    for (t, (id, length, payload)) in results.into_iter().enumerate() {
        assert_eq!(id, t);
        assert_eq!(length, expected);
        assert!(payload.iter().all(|&x| x == t));
    }
}
