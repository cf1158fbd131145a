//! JSON text as it comes from JavaScript: the bytes of a Buffer, or the UTF-16 code units of a
//! string. Copying a string's units is a plain copy for V8; the UTF-8 conversion then runs off
//! Node's thread, in [`Text::into_utf8`].
//!
//! The buffers these texts are copied and converted into are reused ([`Spares`]): a new one costs
//! a page fault and a zeroed page for every page it spans, as much time again as the copy itself,
//! and the copy is made on Node's thread.

use std::sync::Mutex;

pub enum Text {
    Utf8(Vec<u8>),
    Utf16(Vec<u16>),
}

impl Text {
    /// The length in code units (bytes, or UTF-16 units). The UTF-8 form is at least this long.
    pub fn len(&self) -> usize {
        match self {
            Text::Utf8(bytes) => bytes.len(),
            Text::Utf16(units) => units.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text as UTF-8. A lone surrogate becomes U+FFFD, as in every JavaScript-to-UTF-8
    /// conversion.
    pub fn into_utf8(self) -> Vec<u8> {
        match self {
            Text::Utf8(bytes) => bytes,
            Text::Utf16(units) => {
                let utf8 = utf16_to_utf8(&units);
                UTF16_SPARES.give_back(units);
                utf8
            }
        }
    }
}

/// Buffers kept for the next text instead of freed, already backed by memory: at most
/// SPARE_BUFFERS per kind, each of at most SPARE_MAX_BYTES, so that at most 64 MiB are kept (and only
/// as much as the largest texts seen).
pub struct Spares<T> {
    buffers: Mutex<Vec<Vec<T>>>,
}

const SPARE_BUFFERS: usize = 2;
const SPARE_MAX_BYTES: usize = 16 << 20;

/// Copies of strings' UTF-16 units, made on Node's thread.
pub static UTF16_SPARES: Spares<u16> = Spares::new();
/// UTF-8 texts: Buffers' copies (made on Node's thread) and strings converted to UTF-8.
pub static UTF8_SPARES: Spares<u8> = Spares::new();

impl<T> Spares<T> {
    const fn new() -> Self {
        Spares {
            buffers: Mutex::new(Vec::new()),
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Vec<Vec<T>>> {
        crate::lock(&self.buffers)
    }

    /// An empty buffer for at least `capacity` items: the smallest spare one that fits, or a new
    /// one.
    pub fn take(&self, capacity: usize) -> Vec<T> {
        let spare = {
            let mut buffers = self.buffers();
            let fits = (0..buffers.len())
                .filter(|&i| buffers[i].capacity() >= capacity)
                .min_by_key(|&i| buffers[i].capacity());
            fits.map(|i| buffers.swap_remove(i))
        };
        spare.unwrap_or_else(|| {
            let mut fresh = Vec::with_capacity(capacity);
            prefer_huge_pages(&mut fresh);
            fresh
        })
    }

    /// Keeps `buffer` for a later `take`, unless it is too large or the spares are all larger.
    pub fn give_back(&self, mut buffer: Vec<T>) {
        if buffer.capacity() * std::mem::size_of::<T>() > SPARE_MAX_BYTES {
            return;
        }
        buffer.clear();
        let mut buffers = self.buffers();
        if buffers.len() < SPARE_BUFFERS {
            buffers.push(buffer);
        } else if let Some(smallest) = buffers.iter_mut().min_by_key(|b| b.capacity()) {
            if smallest.capacity() < buffer.capacity() {
                *smallest = buffer;
            }
        }
    }
}

/// `String::from_utf16_lossy`, with ASCII (most of a session's JSON) narrowed 16 units at a time
/// instead of decoded char by char, into a spare buffer.
fn utf16_to_utf8(units: &[u16]) -> Vec<u8> {
    const BLOCK: usize = 16;
    // ASCII takes one byte a unit; a little more room for what is not.
    let mut out = UTF8_SPARES.take(units.len() + units.len() / 32 + 16);
    let mut rest = units;
    while !rest.is_empty() {
        // Whole ASCII blocks, each checked and narrowed in one go (both compile to a few vector
        // instructions); then unit by unit up to the first non-ASCII one.
        while let Some(block) = rest.first_chunk::<BLOCK>() {
            if block.iter().fold(0, |all, &u| all | u) >= 0x80 {
                break;
            }
            out.extend_from_slice(&block.map(|u| u as u8));
            rest = &rest[BLOCK..];
        }
        let ascii = rest.iter().position(|&u| u >= 0x80).unwrap_or(rest.len());
        out.extend(rest[..ascii].iter().map(|&u| u as u8));
        rest = &rest[ascii..];
        // A run of non-ASCII units holds both halves of any surrogate pair in it.
        let other = rest.iter().position(|&u| u < 0x80).unwrap_or(rest.len());
        out.extend_from_slice(String::from_utf16_lossy(&rest[..other]).as_bytes());
        rest = &rest[other..];
    }
    out
}

/// Asks Linux to back the spare capacity of `buf` with 2 MiB pages where it spans them: a large
/// buffer then takes a few page faults instead of one per 4 KiB, which on a virtual machine costs
/// about 2 µs each. A hint only: elsewhere, or when refused, nothing changes.
pub fn prefer_huge_pages<T>(buf: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    let spare = buf.spare_capacity_mut();
    let start = spare.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(spare);
    let (first, last) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    #[cfg(target_os = "linux")]
    if last > first {
        // SAFETY: the range lies inside memory this Vec owns, and MADV_HUGEPAGE changes how it is
        // backed, never what it holds.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8_of(text: &str) -> Vec<u8> {
        Text::Utf16(text.encode_utf16().collect()).into_utf8()
    }

    #[test]
    fn a_string_becomes_the_same_text_in_utf8() {
        let long_ascii = "{\"content\":\"plain words\"}".repeat(40);
        for text in [
            "",
            "a",
            "é",
            "日本語 text after",
            "mixed é and 😀 and 🎉🎉 at 0x7f \u{7f} \u{80}",
            &long_ascii,
            &format!("{long_ascii}é{long_ascii}😀"),
        ] {
            assert_eq!(utf8_of(text), text.as_bytes(), "{text:?}");
        }
    }

    #[test]
    fn spare_buffers_are_reused_and_bounded() {
        // A pool of this test's own: the shared ones are used by other tests at the same time.
        let spares: Spares<u16> = Spares::new();
        let wanted = 3 * 1024 * 1024 + 17;
        let first = spares.take(wanted);
        let address = first.as_ptr();
        spares.give_back(first);
        let again = spares.take(wanted);
        assert!(again.is_empty() && again.capacity() >= wanted);
        assert_eq!(
            again.as_ptr(),
            address,
            "the buffer given back is the one taken"
        );
        // The smallest that fits is taken; a new one when none fits.
        let small = spares.take(10);
        let small_address = small.as_ptr();
        spares.give_back(again);
        spares.give_back(small);
        let (small, large) = (spares.take(5), spares.take(wanted));
        assert_eq!(small.as_ptr(), small_address);
        assert_eq!(large.as_ptr(), address);
        // No more than SPARE_BUFFERS are kept, the largest of them, and none over the bound.
        for units in [100, 200, 300] {
            spares.give_back(Vec::with_capacity(units));
        }
        let huge: Vec<u16> = Vec::with_capacity(SPARE_MAX_BYTES / 2 + 1);
        let huge_address = huge.as_ptr();
        spares.give_back(huge);
        let kept: Vec<usize> = spares.buffers().iter().map(|b| b.capacity()).collect();
        assert_eq!(kept.len(), SPARE_BUFFERS);
        assert!(kept.iter().all(|c| (200..SPARE_MAX_BYTES / 2).contains(c)));
        assert!(spares.buffers().iter().all(|b| b.as_ptr() != huge_address));
    }

    #[test]
    fn a_lone_surrogate_becomes_the_replacement_character() {
        let mut units: Vec<u16> = "x".repeat(20).encode_utf16().collect();
        units.push(0xD800);
        units.extend("y".encode_utf16());
        let expected = format!("{}\u{FFFD}y", "x".repeat(20));
        assert_eq!(Text::Utf16(units).into_utf8(), expected.as_bytes());
        assert_eq!(Text::Utf16(vec![0xDC00]).into_utf8(), "\u{FFFD}".as_bytes());
    }
}
