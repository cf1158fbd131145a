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

/// Lets another thread ready to run on this core have it, unless this was the last piece.
fn yield_unless_done(done: usize, total: usize) {
    if done < total {
        std::thread::yield_now();
    }
}

/// A copy of `bytes`.
pub fn copy(bytes: &[u8]) -> Vec<u8> {
    let mut copy = Vec::with_capacity(bytes.len());
    for piece in bytes.chunks(PIECE) {
        copy.extend_from_slice(piece);
        yield_unless_done(copy.len(), bytes.len());
    }
    copy
}

/// Feeds `bytes` to `hasher`.
pub fn crc32(hasher: &mut crc32fast::Hasher, bytes: &[u8]) {
    let mut done = 0;
    for piece in bytes.chunks(PIECE) {
        hasher.update(piece);
        done += piece.len();
        yield_unless_done(done, bytes.len());
    }
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
        yield_unless_done(bytes.len(), expected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
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
