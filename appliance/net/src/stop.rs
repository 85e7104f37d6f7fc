//! A stop signal that blocking reads can wait on beside their file descriptor.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Once raised, stays raised; every waiter wakes.
#[derive(Debug)]
pub struct Stop {
    raised: AtomicBool,
    event: EventFd,
}

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Ready,
    Stopped,
    TimedOut,
}

impl Stop {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            raised: AtomicBool::new(false),
            event: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        // The counter only needs to be non-zero; nobody reads it back.
        let _ = self.event.write(1);
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Wait until `fd` has `events` or the stop is raised (or `timeout` passes).
    pub fn wait_fd(
        &self,
        fd: BorrowedFd<'_>,
        events: PollFlags,
        timeout: Option<Duration>,
    ) -> io::Result<Wake> {
        if self.is_raised() {
            return Ok(Wake::Stopped);
        }
        let mut fds = [
            PollFd::new(fd, events),
            PollFd::new(self.event.as_fd(), PollFlags::POLLIN),
        ];
        let n = match poll(&mut fds, to_poll_timeout(timeout)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return Ok(Wake::TimedOut),
            Err(e) => return Err(e.into()),
        };
        if self.is_raised() {
            Ok(Wake::Stopped)
        } else if n == 0 {
            Ok(Wake::TimedOut)
        } else {
            Ok(Wake::Ready)
        }
    }

    /// Sleep for `d` unless the stop is raised first; returns whether it was.
    pub fn sleep(&self, d: Duration) -> bool {
        if self.is_raised() {
            return true;
        }
        let mut fds = [PollFd::new(self.event.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, to_poll_timeout(Some(d)));
        self.is_raised()
    }
}

fn to_poll_timeout(d: Option<Duration>) -> PollTimeout {
    match d {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_wakes_a_sleeper_and_stays_raised() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let s = stop.clone();
        let t = std::thread::spawn(move || s.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        stop.raise();
        assert!(t.join().unwrap());
        assert!(stop.sleep(Duration::from_secs(30)));
        assert!(!Stop::new().unwrap().sleep(Duration::from_millis(1)));
    }
}
