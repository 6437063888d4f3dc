//! The one loop every device runs over a queue: pop descriptor chains with notifications
//! suppressed, hand each to the device, return it as used, re-enable notifications and check
//! again (so no kick is lost), then interrupt the guest if the ring says it wants one.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::Interrupt;

/// What the device did with a chain.
pub enum Outcome {
    /// Used; `len` bytes were written into the chain's writable part.
    Used(u32),
    /// Not consumed: leave it on the ring and stop (e.g. nothing to put in an rx buffer).
    Stop,
}

/// Processes every available chain of `q` with `f`. Returns how many chains were used. Errors
/// reading the ring (a guest that corrupted it) end the pass; the chains used so far are returned.
pub fn process<'m, F>(q: &mut Queue, mem: &'m GuestMemoryMmap, irq: &Interrupt, mut f: F) -> usize
where
    F: FnMut(DescriptorChain<&'m GuestMemoryMmap>) -> Outcome,
{
    let mut used = 0usize;
    'outer: loop {
        if q.disable_notification(mem).is_err() {
            break;
        }
        let mut progressed = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            progressed = true;
            let head = chain.head_index();
            match f(chain) {
                Outcome::Used(len) => {
                    if q.add_used(mem, head, len).is_err() {
                        break 'outer;
                    }
                    used += 1;
                }
                Outcome::Stop => {
                    q.go_to_previous_position();
                    // Ask for a kick only when the ring runs dry; a stopped device is woken by
                    // its own event instead.
                    break 'outer;
                }
            }
        }
        // More chains arrived while notifications were off: go again. A ring that claims chains
        // but yields none (a corrupt available index) must not spin forever.
        match q.enable_notification(mem) {
            Ok(true) if progressed => continue,
            _ => break,
        }
    }
    if used > 0 && q.needs_notification(mem).unwrap_or(true) {
        irq.signal_used();
    }
    used
}

/// True when `q` has chains the device has not taken yet.
pub fn has_available(q: &Queue, mem: &GuestMemoryMmap) -> bool {
    q.avail_idx(mem, std::sync::atomic::Ordering::Acquire)
        .map(|i| i.0 != q.next_avail())
        .unwrap_or(false)
}
