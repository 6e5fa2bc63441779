//! A per-user runtime directory for processes started without one (services, containers,
//! `ssh host cmd`). Vulkan drivers load their Wayland support when wgpu probes for a GPU, and
//! the Wayland client library prints "error: XDG_RUNTIME_DIR is invalid or not set in the
//! environment." on stderr when the variable is missing, twice per run. Pointing it at an
//! empty private directory, as a login session would provide, keeps that probe silent (no
//! display server is found there, which is the truth for a headless run).

use std::path::Path;

/// Sets `XDG_RUNTIME_DIR` to a private directory under the system's temporary folder when it
/// is unset or not an absolute path. Call before any other thread starts.
pub fn ensure() {
    #[cfg(target_os = "linux")]
    {
        let current = std::env::var_os("XDG_RUNTIME_DIR");
        if current
            .as_deref()
            .is_some_and(|d| Path::new(d).is_absolute())
        {
            return;
        }
        // SAFETY: `geteuid` has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = std::env::temp_dir().join(format!("streamtrack-runtime-{uid}"));
        if create_private(&dir).is_ok() {
            // SAFETY: called from `main` before any other thread exists, so nothing reads the
            // environment concurrently.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

/// Creates `dir` readable only by this user (or checks that an existing one is ours alone).
#[cfg(target_os = "linux")]
fn create_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            // SAFETY: `geteuid` has no preconditions.
            let ours = meta.uid() == unsafe { libc::geteuid() };
            if meta.is_dir() && ours && meta.permissions().mode() & 0o077 == 0 {
                Ok(())
            } else {
                Err(std::io::Error::other(
                    "not a private directory of this user",
                ))
            }
        }
        Err(e) => Err(e),
    }
}
