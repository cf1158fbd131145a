//! Long copies, reads and checksums done a piece at a time, with a `sched_yield` after each piece.
//!
//! Node's main thread shares the cores with the store's threads. Linux often wakes it on the core
//! where one of them is working, even with another core idle, and leaves it waiting there until
//! that work is done: a 10 MB copy for a restore held it 1.2–1.5 ms. A yield after each piece lets
//! a thread waiting for the core run within one piece's time (~30 µs). Work of one piece or less
//! (every session of ordinary size) never yields.

use std::io::Read;

/// The work done between two yields: 256 KiB, about 30 µs of copying here.
pub const PIECE: usize = 256 * 1024;

/// Calls `work` on each piece of `items` (`piece` items long), yielding the core between pieces.
pub fn in_pieces<T>(items: &[T], piece: usize, mut work: impl FnMut(&[T])) {
    let mut pieces = items.chunks(piece.max(1)).peekable();
    while let Some(this) = pieces.next() {
        work(this);
        if pieces.peek().is_some() {
            std::thread::yield_now();
        }
    }
}

/// A copy of `bytes`.
pub fn copy(bytes: &[u8]) -> Vec<u8> {
    let mut copy = Vec::with_capacity(bytes.len());
    in_pieces(bytes, PIECE, |piece| copy.extend_from_slice(piece));
    copy
}

/// Feeds `bytes` to `hasher`.
pub fn crc32(hasher: &mut crc32fast::Hasher, bytes: &[u8]) {
    in_pieces(bytes, PIECE, |piece| hasher.update(piece));
}

/// Reads `source` to its end, `expected` bytes being its likely length.
pub fn read_to_end(source: &mut impl Read, expected: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(expected);
    loop {
        let read = source.by_ref().take(PIECE as u64).read_to_end(&mut bytes)?;
        // Short of a whole piece: the end came.
        if read < PIECE {
            return Ok(bytes);
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn in_pieces_sees_every_item_once_in_order_in_pieces_of_the_size_asked() {
        let items: Vec<u32> = (0..37).collect();
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        in_pieces(&items, 16, |piece| {
            sizes.push(piece.len());
            seen.extend_from_slice(piece);
        });
        assert_eq!(seen, items);
        assert_eq!(sizes, [16, 16, 5]);
        in_pieces(&[] as &[u32], 16, |_| panic!("no piece of nothing"));
    }

    #[test]
    fn pieces_add_up_to_the_whole_at_every_length_around_a_piece() {
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 17] {
            let bytes = sample(len);
            assert_eq!(copy(&bytes), bytes, "copy of {len} bytes");
            let mut hasher = crc32fast::Hasher::new();
            crc32(&mut hasher, &bytes);
            assert_eq!(hasher.finalize(), crc32fast::hash(&bytes), "crc of {len}");
            for expected in [0, len / 2, len, len + 5] {
                let read = read_to_end(&mut &bytes[..], expected).unwrap();
                assert_eq!(read, bytes, "read of {len} bytes, {expected} expected");
            }
        }
    }
}
