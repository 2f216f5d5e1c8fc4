//! Leaf helpers any stage may use: Python's own spellings of values and
//! whitespace, so that messages read as the reference's do, and worker text
//! made safe for a terminal (`terminal`), a poison-proof `Mutex::lock`
//! (`LockExt`), and `with_fields!`, the builder methods of the public option
//! structs. They touch nothing but memory.

/// `with_<field>` builder methods, one per public field: each sets the field
/// and returns the options, so that callers outside the crate can build a
/// `#[non_exhaustive]` struct without naming every field.
macro_rules! with_fields {
    ($ty:ident { $($(#[$doc:meta])* $with:ident => $field:ident: $arg:ty $(as $conv:ident)?,)* }) => {
        impl $ty {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $with(mut self, $field: $arg) -> Self {
                    self.$field = $crate::support::with_fields!(@conv $field $($conv)?);
                    self
                }
            )*
        }
    };
    (@conv $v:ident) => { $v };
    (@conv $v:ident into) => { $v.into() };
    (@conv $v:ident some) => { Some($v.into()) };
}
pub(crate) use with_fields;

pub(crate) mod pyrepr;
pub(crate) mod terminal;

/// Python's `str.isspace()` for one character.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A unique id shaped as Python's `str(uuid.uuid4())`: random per process,
/// then a counter, so ids never repeat within a process. Request ids and the
/// names of scratch folders use it.
pub(crate) fn unique_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SEED: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (hi, lo) = *SEED.get_or_init(|| {
        let state = std::collections::hash_map::RandomState::new();
        let mut a = state.build_hasher();
        a.write_u32(std::process::id());
        let mut b = state.build_hasher();
        b.write_u64(a.finish());
        (a.finish(), b.finish())
    });
    let lo = lo ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0xc0 << 56)) | (0x80 << 56); // variant 1
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// `Mutex::lock` that takes over a lock poisoned by a panic: everything kept
/// under these locks (maps, counters, buffers) is changed in single steps, so
/// a panic elsewhere leaves it consistent, and the runner keeps serving.
pub(crate) trait LockExt<T: ?Sized> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for std::sync::Mutex<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}
