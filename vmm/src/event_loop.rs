//! The device thread: one epoll set over every virtio queue's ioeventfd, each device's own file
//! descriptors (the vsock muxer), and the exit eventfd. Runs until the VM ends.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::devices::virtio::mmio::MmioTransport;
use crate::vstate::control::{Control, ExitReason};

#[derive(Clone, Copy, Debug)]
enum Token {
    Exit,
    Queue { dev: usize, queue: usize },
    DeviceFd { dev: usize, index: usize },
}

/// Errors building the loop.
#[derive(Debug, thiserror::Error)]
#[error("event loop: {0}")]
pub struct Error(io::Error);

/// The loop.
pub struct EventLoop {
    epoll: Epoll,
    tokens: Vec<Token>,
    devices: Vec<Arc<Mutex<MmioTransport>>>,
    control: Arc<Control>,
}

impl EventLoop {
    /// Watches `devices` and the exit eventfd of `control`.
    pub fn new(
        devices: Vec<Arc<Mutex<MmioTransport>>>,
        control: Arc<Control>,
    ) -> Result<Self, Error> {
        let epoll = Epoll::new().map_err(Error)?;
        let mut l = Self {
            epoll,
            tokens: Vec::new(),
            devices: Vec::new(),
            control,
        };
        l.add(l.control.exit_evt().as_raw_fd(), Token::Exit)?;
        for (dev, t) in devices.iter().enumerate() {
            let t_locked = t
                .lock()
                .map_err(|_| Error(io::Error::other("device lock poisoned")))?;
            let queue_fds: Vec<RawFd> = t_locked
                .queue_evts()
                .iter()
                .map(|e| e.as_raw_fd())
                .collect();
            let dev_fds = t_locked.device().fds();
            drop(t_locked);
            for (queue, fd) in queue_fds.into_iter().enumerate() {
                l.add(fd, Token::Queue { dev, queue })?;
            }
            for (index, fd) in dev_fds.into_iter().enumerate() {
                l.add(fd, Token::DeviceFd { dev, index })?;
            }
        }
        l.devices = devices;
        Ok(l)
    }

    fn add(&mut self, fd: RawFd, token: Token) -> Result<(), Error> {
        let id = self.tokens.len() as u64;
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, id))
            .map_err(Error)?;
        self.tokens.push(token);
        Ok(())
    }

    fn next_timeout_ms(&self) -> i32 {
        let now = Instant::now();
        let next = self
            .devices
            .iter()
            .filter_map(|d| d.lock().ok().and_then(|t| t.device().next_deadline()))
            .min();
        match next {
            None => -1,
            Some(t) if t <= now => 0,
            Some(t) => ((t - now).as_millis() as i32).saturating_add(1),
        }
    }

    fn fire_deadlines(&self) {
        let now = Instant::now();
        for d in &self.devices {
            if let Ok(mut t) = d.lock()
                && t.device().next_deadline().is_some_and(|dl| dl <= now)
            {
                t.device_mut().on_deadline(now);
            }
        }
    }

    /// Runs until an exit is requested; returns the reason.
    pub fn run(&mut self) -> ExitReason {
        let mut events = [EpollEvent::default(); 64];
        loop {
            if let Some(r) = self.control.exit_reason() {
                return r;
            }
            let timeout = self.next_timeout_ms();
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ExitReason::VmmError(format!("epoll_wait: {e}")),
            };
            if n == 0 {
                self.fire_deadlines();
                continue;
            }
            for ev in &events[..n] {
                let Some(token) = self.tokens.get(ev.data() as usize).copied() else {
                    continue;
                };
                self.dispatch(token);
            }
            self.fire_deadlines();
        }
    }

    fn dispatch(&self, token: Token) {
        match token {
            Token::Exit => {}
            Token::Queue { dev, queue } => {
                let Some(d) = self.devices.get(dev) else {
                    return;
                };
                let Ok(mut t) = d.lock() else { return };
                // Drain the kick counter before looking at the ring, so no kick is lost.
                let _ = t.queue_evts()[queue].read();
                if t.is_active() {
                    t.device_mut().process_queue(queue);
                }
            }
            Token::DeviceFd { dev, index } => {
                let Some(d) = self.devices.get(dev) else {
                    return;
                };
                if let Ok(mut t) = d.lock() {
                    t.device_mut().process_fd(index);
                }
            }
        }
    }
}
