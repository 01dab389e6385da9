//! Redis Cluster hash slots: which keys may share one multi-key command.

/// Number of hash slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster assigns slots with.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: the text between the first `{` and the next `}` when it
/// is not empty (a "hash tag"), otherwise the whole key.
fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The cluster slot of `key`.
pub(crate) fn slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// Indices of `keys` grouped by slot, in first-seen order; each group can go into one
/// multi-key command.
pub(crate) fn group_by_slot<K: AsRef<[u8]>>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let s = slot(k.as_ref());
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, members)) => members.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // The check value of CRC16/XMODEM, and slots Redis itself reports for these keys.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(
            slot(b"{}x"),
            crc16(b"{}x") % SLOTS,
            "empty tag hashes the whole key"
        );
        assert_eq!(
            slot(b"a{b"),
            crc16(b"a{b") % SLOTS,
            "unclosed tag hashes the whole key"
        );
    }

    #[test]
    fn grouping_keeps_every_index_once() {
        let keys = ["{a}1", "b", "{a}2", "c", "b"];
        let groups = group_by_slot(&keys);
        let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        assert!(groups.iter().any(|g| g == &vec![0, 2]));
        assert!(groups.iter().any(|g| g == &vec![1, 4]));
    }
}
