//! A sleep precise to the microsecond inside a tokio runtime.
//!
//! Tokio's timers tick in milliseconds, too coarse for pacing at 10,000
//! requests/s. A Linux timerfd is a file descriptor that becomes readable at
//! a set time to the nanosecond; registered with the runtime's reactor, it
//! wakes the runtime exactly when a job is due, while the runtime goes on
//! serving connections until then.

use std::io;
use std::time::Duration;

/// One-shot precise sleeps, one at a time.
pub struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

#[cfg(target_os = "linux")]
impl PreciseTimer {
    /// A timer registered with the current runtime.
    pub fn new() -> io::Result<PreciseTimer> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create takes two flags and returns a new file
        // descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd stays open and the same for as long as the
        // AsyncFd owns it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(owned) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(PreciseTimer { fd })
    }

    /// Sleeps `duration`, serving the runtime's other tasks meanwhile.
    pub async fn sleep(&self, duration: Duration) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if duration.is_zero() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: duration.as_secs() as libc::time_t,
                tv_nsec: duration.subsec_nanos() as libc::c_long,
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: fd is a timerfd this struct owns; spec outlives the call;
        // the old value is not asked for.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let expired = ready.try_io(|inner| {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8.
                let n = unsafe { libc::read(inner.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match expired {
                Ok(result) => {
                    // Expiries are read whole: nothing is left to read until
                    // the next one, so the next sleep need not try first.
                    ready.clear_ready();
                    return result;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl PreciseTimer {
    /// A timer; elsewhere than Linux, tokio's (millisecond) one.
    pub fn new() -> io::Result<PreciseTimer> {
        Ok(PreciseTimer {})
    }

    /// Sleeps `duration`.
    pub async fn sleep(&self, duration: Duration) -> io::Result<()> {
        tokio::time::sleep(duration).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn sleeps_are_precise_and_serve_other_tasks() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let timer = PreciseTimer::new().unwrap();
            let other = tokio::spawn(async { 7 });
            let mut late = Vec::new();
            for _ in 0..200 {
                let start = Instant::now();
                timer.sleep(Duration::from_micros(300)).await.unwrap();
                late.push(start.elapsed().saturating_sub(Duration::from_micros(300)));
            }
            late.sort();
            assert_eq!(other.await.unwrap(), 7, "the other task ran meanwhile");
            // Tokio's timer would wake a millisecond late.
            assert!(
                late[100] < Duration::from_micros(500),
                "median {:?}",
                late[100]
            );
        });
    }
}
