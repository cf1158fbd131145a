//! JSON text as it comes from JavaScript: the bytes of a Buffer, or the UTF-16 code units of a
//! string. Copying a string's units is a plain copy for V8; the UTF-8 conversion then runs off
//! Node's thread, in [`Text::into_utf8`].
//!
//! The copy is made on Node's thread, so the buffers it goes into are reused ([`utf16_buffer`]): a
//! new one costs a page fault and a zeroed page for every page it spans, as much time again as the
//! copy itself.

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
                give_back(units);
                utf8
            }
        }
    }
}

/// Spare buffers for strings' UTF-16 units, already backed by memory: at most this many, each of
/// at most SPARE_MAX_UNITS (16 MiB), so that at most 32 MiB are kept.
const SPARE_BUFFERS: usize = 2;
const SPARE_MAX_UNITS: usize = 8 << 20;
static SPARE_UTF16: Mutex<Vec<Vec<u16>>> = Mutex::new(Vec::new());

fn spare_utf16() -> std::sync::MutexGuard<'static, Vec<Vec<u16>>> {
    SPARE_UTF16
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An empty buffer for at least `capacity` UTF-16 units: the smallest spare one that fits, or a
/// new one.
pub fn utf16_buffer(capacity: usize) -> Vec<u16> {
    let spare = {
        let mut spare = spare_utf16();
        let fits = (0..spare.len())
            .filter(|&i| spare[i].capacity() >= capacity)
            .min_by_key(|&i| spare[i].capacity());
        fits.map(|i| spare.swap_remove(i))
    };
    spare.unwrap_or_else(|| {
        let mut fresh = Vec::with_capacity(capacity);
        prefer_huge_pages(&mut fresh);
        fresh
    })
}

/// Keeps `units` for the next string, unless it is too large or the spares are larger.
fn give_back(mut units: Vec<u16>) {
    if units.capacity() > SPARE_MAX_UNITS {
        return;
    }
    units.clear();
    let mut spare = spare_utf16();
    if spare.len() < SPARE_BUFFERS {
        spare.push(units);
    } else if let Some(smallest) = spare.iter_mut().min_by_key(|b| b.capacity()) {
        if smallest.capacity() < units.capacity() {
            *smallest = units;
        }
    }
}

/// `String::from_utf16_lossy`, with ASCII (most of a session's JSON) narrowed 16 units at a time
/// instead of decoded char by char.
fn utf16_to_utf8(units: &[u16]) -> Vec<u8> {
    const BLOCK: usize = 16;
    let mut out = Vec::with_capacity(units.len());
    let mut rest = units;
    while !rest.is_empty() {
        let mut ascii = 0;
        // Whole blocks first (the OR of a block compiles to a few vector instructions), then
        // unit by unit up to the first non-ASCII one.
        while let Some(block) = rest.get(ascii..ascii + BLOCK) {
            if block.iter().fold(0, |all, &u| all | u) >= 0x80 {
                break;
            }
            ascii += BLOCK;
        }
        ascii += rest[ascii..]
            .iter()
            .position(|&u| u >= 0x80)
            .unwrap_or(rest.len() - ascii);
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
        // Other tests share the spares; these capacities are this test's own.
        let wanted = 3 * 1024 * 1024 + 17;
        let mut first = utf16_buffer(wanted);
        first.extend("{}".encode_utf16());
        let address = first.as_ptr();
        assert_eq!(Text::Utf16(first).into_utf8(), b"{}");
        let again = utf16_buffer(wanted);
        assert!(again.is_empty() && again.capacity() >= wanted);
        assert_eq!(
            again.as_ptr(),
            address,
            "the buffer given back is the one taken"
        );
        give_back(again);
        // One larger than the bound is not kept.
        let huge = utf16_buffer(SPARE_MAX_UNITS + 1);
        let huge_address = huge.as_ptr();
        give_back(huge);
        assert!(spare_utf16()
            .iter()
            .all(|b| b.as_ptr() != huge_address && b.capacity() <= SPARE_MAX_UNITS));
        assert!(spare_utf16().len() <= SPARE_BUFFERS);
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
