//! Bytes from the guest the host socket has not taken yet. Bounded by the credit the VMM
//! advertised: a guest that sends beyond it is violating the protocol and gets reset.

use std::collections::VecDeque;
use std::io::{self, Write};

/// A bounded FIFO of bytes.
#[derive(Debug)]
pub struct TxBuf {
    data: VecDeque<u8>,
    cap: usize,
}

/// The buffer would exceed its bound.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest sent {wanted} bytes with only {free} bytes of credit left")]
pub struct Overflow {
    /// What the guest sent.
    pub wanted: usize,
    /// What was free.
    pub free: usize,
}

impl TxBuf {
    /// An empty buffer that holds at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            data: VecDeque::new(),
            cap,
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends `bytes`, all or nothing.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        let free = self.cap - self.data.len();
        if bytes.len() > free {
            return Err(Overflow {
                wanted: bytes.len(),
                free,
            });
        }
        self.data.extend(bytes);
        Ok(())
    }

    /// Writes as much as `w` takes; returns how many bytes left the buffer. `WouldBlock` stops
    /// quietly; other errors are returned.
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        let mut total = 0;
        while !self.data.is_empty() {
            let (a, _) = self.data.as_slices();
            match w.write(a) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.data.drain(..n);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.data.is_empty() {
            // Give back the memory of a burst.
            self.data.shrink_to(4096);
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `n` bytes per call, then would block after `calls` calls.
    struct Slow {
        got: Vec<u8>,
        n: usize,
        calls: usize,
    }
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let k = b.len().min(self.n);
            self.got.extend_from_slice(&b[..k]);
            Ok(k)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bounded_and_ordered() {
        let mut t = TxBuf::new(10);
        t.push(b"hello").unwrap();
        assert_eq!(t.push(b"worlds"), Err(Overflow { wanted: 6, free: 5 }));
        t.push(b"world").unwrap();
        let mut w = Slow {
            got: vec![],
            n: 3,
            calls: 2,
        };
        assert_eq!(t.flush_to(&mut w).unwrap(), 6);
        assert_eq!(t.len(), 4);
        w.calls = 10;
        assert_eq!(t.flush_to(&mut w).unwrap(), 4);
        assert_eq!(w.got, b"helloworld");
        assert!(t.is_empty());
    }
}
