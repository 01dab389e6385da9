//! Which server holds a key: rendezvous (highest random weight) hashing with XXH3.
//!
//! Every server scores every key; the highest score wins. Adding a server moves only the keys
//! it now wins (about 1/N of them), and removing one moves only its own keys, with no ring of
//! virtual nodes to tune.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The servers' hash seeds, in configuration order.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    seeds: Vec<u64>,
}

impl Ring {
    /// A ring over servers named by their addresses (`host:port`).
    pub(crate) fn new<S: AsRef<str>>(servers: &[S]) -> Ring {
        Ring {
            seeds: servers
                .iter()
                .map(|s| xxh3_64(s.as_ref().as_bytes()))
                .collect(),
        }
    }

    /// The index of the server that holds `key` (the wire key, so every client agrees).
    pub(crate) fn pick(&self, key: &[u8]) -> usize {
        let mut best = (0usize, 0u64);
        for (i, &seed) in self.seeds.iter().enumerate() {
            let score = xxh3_64_with_seed(key, seed);
            if i == 0 || score > best.1 {
                best = (i, score);
            }
        }
        best.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placements(ring: &Ring, names: &[String], n: usize) -> Vec<String> {
        (0..n)
            .map(|i| names[ring.pick(format!("key:{i}").as_bytes())].clone())
            .collect()
    }

    #[test]
    fn adding_a_server_moves_about_one_nth_of_the_keys_and_only_to_it() {
        let three: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:11211")).collect();
        let mut four = three.clone();
        four.push("10.0.0.9:11211".into());
        let n = 20_000;
        let before = placements(&Ring::new(&three), &three, n);
        let after = placements(&Ring::new(&four), &four, n);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(a, b)| a != b).collect();
        let fraction = moved.len() as f64 / n as f64;
        assert!(
            (0.22..0.28).contains(&fraction),
            "moved {fraction:.3}, expected about 1/4"
        );
        assert!(moved.iter().all(|(_, to)| *to == "10.0.0.9:11211"));
        // Balanced: each of the four holds about a quarter.
        for s in &four {
            let share = after.iter().filter(|a| *a == s).count() as f64 / n as f64;
            assert!((0.22..0.28).contains(&share), "{s} holds {share:.3}");
        }
    }

    #[test]
    fn the_order_of_the_server_list_does_not_matter() {
        let a: Vec<String> = vec!["x:1".into(), "y:1".into(), "z:1".into()];
        let b: Vec<String> = vec!["z:1".into(), "x:1".into(), "y:1".into()];
        assert_eq!(
            placements(&Ring::new(&a), &a, 1000),
            placements(&Ring::new(&b), &b, 1000)
        );
    }
}
