//! Randomness (part of `sys`): a seed the process cannot guess in advance,
//! and random bytes from the kernel.

/// 64 bits the process cannot guess in advance, without allocating: the
/// kernel's random bytes for the process (`AT_RANDOM`) on Linux, else
/// addresses that ASLR moves.
pub(crate) fn random_seed() -> u64 {
    #[cfg(unimem_linux)]
    {
        // SAFETY: getauxval has no preconditions; AT_RANDOM, when present,
        // points to 16 random bytes that live as long as the process.
        let random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
        if !random.is_null() {
            // SAFETY: see above; read unaligned, as the ABI gives no alignment.
            let seed = unsafe { random.add(1).read_unaligned() };
            if seed != 0 {
                return seed;
            }
        }
    }
    static HERE: u8 = 0;
    let here = core::ptr::from_ref(&HERE).addr() as u64;
    (here.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15).max(1)
}

/// `N` random bytes from the kernel (`getrandom` on Linux, `/dev/urandom`
/// on other Unix systems). Only UCX's capability tags need it.
#[cfg(feature = "ucx")]
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    #[cfg(target_os = "linux")]
    {
        let mut filled = 0;
        while filled < N {
            let rest = &mut bytes[filled..];
            // SAFETY: a writable buffer of `rest.len()` bytes.
            let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            match usize::try_from(got) {
                Ok(got) => filled += got,
                Err(_) => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() != std::io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes))?;
    }
    Ok(bytes)
}
