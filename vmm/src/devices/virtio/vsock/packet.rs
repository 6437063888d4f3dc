//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, 44 bytes, little endian) and the
//! checks every packet from the guest passes before the muxer acts on it.

/// Header length.
pub const HDR_SIZE: usize = 44;
/// Largest payload accepted or produced in one packet.
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// The host's CID.
pub const HOST_CID: u64 = 2;

/// Socket type: stream (the only one supported).
pub const TYPE_STREAM: u16 = 1;

/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset.
pub const OP_RST: u16 = 3;
/// Shutdown (flags say which direction).
pub const OP_SHUTDOWN: u16 = 4;
/// Data.
pub const OP_RW: u16 = 5;
/// "Here is my credit".
pub const OP_CREDIT_UPDATE: u16 = 6;
/// "Tell me your credit".
pub const OP_CREDIT_REQUEST: u16 = 7;

/// Shutdown flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// A decoded header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub kind: u16,
    /// Operation.
    pub op: u16,
    /// Op-specific flags.
    pub flags: u32,
    /// Sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

fn u32_at(b: &[u8; HDR_SIZE], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Header {
    /// Decodes 44 bytes.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        let u64_at = |o: usize| u64::from(u32_at(b, o)) | (u64::from(u32_at(b, o + 4)) << 32);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(b, 32),
            buf_alloc: u32_at(b, 36),
            fwd_cnt: u32_at(b, 40),
        }
    }

    /// Encodes to 44 bytes.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a packet from the guest was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Fewer than 44 readable bytes.
    #[error("descriptor chain shorter than a vsock header")]
    Short,
    /// Not from the guest's CID, or not to the host.
    #[error("packet addressed from CID {src} to CID {dst}")]
    Address {
        /// Claimed source.
        src: u64,
        /// Claimed destination.
        dst: u64,
    },
    /// Not a stream packet.
    #[error("socket type {0} is not stream")]
    Type(u16),
    /// Payload length larger than the limit or than the chain holds.
    #[error("payload length {len} (chain holds {avail})")]
    Length {
        /// Claimed length.
        len: u32,
        /// Bytes actually in the chain after the header.
        avail: usize,
    },
    /// An operation number that does not exist.
    #[error("unknown operation {0}")]
    Op(u16),
}

/// Checks a header from the guest whose chain holds `avail` payload bytes after it.
pub fn check_tx(h: &Header, guest_cid: u64, avail: usize) -> Result<(), Invalid> {
    if h.src_cid != guest_cid || h.dst_cid != HOST_CID {
        return Err(Invalid::Address {
            src: h.src_cid,
            dst: h.dst_cid,
        });
    }
    if h.kind != TYPE_STREAM {
        return Err(Invalid::Type(h.kind));
    }
    if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&h.op) {
        return Err(Invalid::Op(h.op));
    }
    let allowed = if h.op == OP_RW { MAX_PAYLOAD } else { 0 };
    if h.len > allowed || h.len as usize > avail {
        return Err(Invalid::Length { len: h.len, avail });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok_header() -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 1234,
            dst_port: 1024,
            len: 10,
            kind: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 1 << 18,
            fwd_cnt: 0,
        }
    }

    #[test]
    fn checks_name_the_problem() {
        let h = ok_header();
        assert_eq!(check_tx(&h, 3, 10), Ok(()));
        assert_eq!(
            check_tx(&h, 3, 9),
            Err(Invalid::Length { len: 10, avail: 9 })
        );
        assert!(matches!(check_tx(&h, 4, 10), Err(Invalid::Address { .. })));
        assert!(matches!(
            check_tx(&Header { dst_cid: 3, ..h }, 3, 10),
            Err(Invalid::Address { .. })
        ));
        assert_eq!(
            check_tx(&Header { kind: 2, ..h }, 3, 10),
            Err(Invalid::Type(2))
        );
        assert_eq!(check_tx(&Header { op: 0, ..h }, 3, 10), Err(Invalid::Op(0)));
        assert_eq!(check_tx(&Header { op: 9, ..h }, 3, 10), Err(Invalid::Op(9)));
        let big = Header {
            len: MAX_PAYLOAD + 1,
            ..h
        };
        assert!(matches!(
            check_tx(&big, 3, usize::MAX),
            Err(Invalid::Length { .. })
        ));
        let req_with_data = Header {
            op: OP_REQUEST,
            ..h
        };
        assert!(matches!(
            check_tx(&req_with_data, 3, 10),
            Err(Invalid::Length { .. })
        ));
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform12(any::<u8>())) {
            let mut b = [0u8; HDR_SIZE];
            b[..32].copy_from_slice(&bytes);
            b[32..].copy_from_slice(&tail);
            let h = Header::from_bytes(&b);
            prop_assert_eq!(h.to_bytes(), b);
            // Checking any header never panics.
            let _ = check_tx(&h, 3, usize::from(b[0]) * 1000);
        }
    }
}
