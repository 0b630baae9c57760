//! Little-endian field access on byte buffers, for the spec structures built or parsed as
//! `[u8; N]` (Identify data, log pages, Connect data). Out-of-range reads of untrusted slices
//! return `None`; fields of fixed-size buffers are declared with [`le_fields!`], which checks
//! their bounds at compile time, so their accessors cannot fail.

/// A little-endian integer that can be read from and written to bytes.
pub trait Le: Copy {
    /// Width in bytes.
    const SIZE: usize;
    /// Read from exactly `SIZE` bytes.
    fn read_le(b: &[u8]) -> Self;
    /// Write into exactly `SIZE` bytes.
    fn write_le(self, b: &mut [u8]);
}

macro_rules! impl_le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            #[inline]
            fn write_le(self, b: &mut [u8]) {
                b.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
impl_le!(u8, u16, u32, u64, u128);

/// Read a little-endian integer at `off`, or `None` if it does not fit in `buf`.
#[inline]
pub fn read<T: Le>(buf: &[u8], off: usize) -> Option<T> {
    let end = off.checked_add(T::SIZE)?;
    buf.get(off..end).map(T::read_le)
}

/// Write a little-endian integer at `off`; returns false (writing nothing) if it does not fit.
#[inline]
pub(crate) fn write<T: Le>(buf: &mut [u8], off: usize, v: T) -> bool {
    let Some(end) = off.checked_add(T::SIZE) else {
        return false;
    };
    match buf.get_mut(off..end) {
        Some(b) => {
            v.write_le(b);
            true
        }
        None => false,
    }
}

/// Copy `s` into `field`, padding with `pad` (ASCII fields such as SN/MN/FR are space
/// padded, NQNs NUL padded). Text longer than the field is cut at the last whole UTF-8
/// character that fits. Returns whether `s` fitted entirely.
pub(crate) fn put_str(field: &mut [u8], s: &str, pad: u8) -> bool {
    let mut n = s.len().min(field.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
    field[n..].fill(pad);
    n == s.len()
}

/// Whether a `size`-byte field at `off` fits in `len` bytes (for [`le_fields!`]'s
/// compile-time bounds checks).
pub(crate) const fn fits(off: usize, size: usize, len: usize) -> bool {
    off + size <= len
}

/// Declare little-endian integer fields of a `struct X { buf: [u8; N] }` wrapper: for each
/// `get / set : type = offset;`, a getter and a setter, with the bounds checked at compile time.
macro_rules! le_fields {
    ($len:expr; $( $(#[$m:meta])* $get:ident / $set:ident : $t:ty = $off:expr ;)*) => {
        $(
            $(#[$m])*
            #[inline]
            pub fn $get(&self) -> $t {
                const { assert!($crate::bytes::fits($off, std::mem::size_of::<$t>(), $len)) };
                <$t as $crate::bytes::Le>::read_le(
                    &self.buf[$off..$off + std::mem::size_of::<$t>()],
                )
            }
            #[doc = concat!("Set `", stringify!($get), "` (offset ", stringify!($off), ").")]
            #[inline]
            pub fn $set(&mut self, v: $t) {
                const { assert!($crate::bytes::fits($off, std::mem::size_of::<$t>(), $len)) };
                <$t as $crate::bytes::Le>::write_le(
                    v,
                    &mut self.buf[$off..$off + std::mem::size_of::<$t>()],
                )
            }
        )*
    };
}
pub(crate) use le_fields;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_bounds() {
        let mut b = [0u8; 8];
        assert!(write(&mut b, 2, 0x1234u16));
        assert_eq!(b[2..4], [0x34, 0x12]);
        assert_eq!(read::<u16>(&b, 2), Some(0x1234));
        assert_eq!(read::<u64>(&b, 1), None);
        assert_eq!(read::<u32>(&b, usize::MAX), None);
        assert!(!write(&mut b, 7, 1u16));
        assert!(!write(&mut b, usize::MAX, 1u8));
        assert_eq!(b[7], 0);
    }

    #[test]
    fn put_str_pads_and_cuts_on_char_boundary() {
        let mut f = [0u8; 6];
        assert!(put_str(&mut f, "ab", b' '));
        assert_eq!(&f, b"ab    ");
        assert!(!put_str(&mut f, "abcdefgh", 0));
        assert_eq!(&f, b"abcdef");
        // "é" is two bytes: it must not be split.
        assert!(!put_str(&mut f, "abcdeé", 0));
        assert_eq!(&f, b"abcde\0");
    }
}
