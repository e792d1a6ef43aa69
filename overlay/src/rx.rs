//! The VTEP's receive decision, pure: a datagram from a peer is accepted when its VXLAN header is
//! valid, its VNI names an overlay network on the socket's port, and the sender is one of that
//! network's peers; the inner frame then goes to the network. The switch performs the verdict
//! on its sockets and counts each refusal.

use std::net::IpAddr;

use wire::vxlan::{self, DecapError};

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a valid VXLAN packet (too short for the header and an inner Ethernet header, or
    /// the I flag unset).
    Malformed,
    /// The VNI names no overlay network on this UDP port.
    UnknownVni,
    /// The sender is not a peer of the VNI's network.
    UnknownPeer,
}

impl From<DecapError> for Refused {
    fn from(_: DecapError) -> Refused {
        Refused::Malformed
    }
}

/// Accept `datagram` from `from`: its network (what `network` gives for the VNI, with that
/// network's peers from `peers`) and the inner frame, or why not.
pub fn accept<N>(
    datagram: &[u8],
    from: IpAddr,
    network: impl FnOnce(u32) -> Option<N>,
    peers: impl FnOnce(&N) -> &[IpAddr],
) -> Result<(N, &[u8]), Refused> {
    let vni = vxlan::decap(datagram)?;
    let net = network(vni).ok_or(Refused::UnknownVni)?;
    if !peers(&net).contains(&from) {
        return Err(Refused::UnknownPeer);
    }
    Ok((net, &datagram[vxlan::HEADER_LEN..]))
}

#[cfg(test)]
mod test {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 240, 0, 2));

    fn datagram(vni: u32) -> Vec<u8> {
        let mut d = vec![0u8; vxlan::HEADER_LEN + 14];
        let h: &mut [u8; vxlan::HEADER_LEN] = (&mut d[..8]).try_into().unwrap();
        vxlan::write_header(h, vni);
        d[8 + 13] = 0x42; // the inner frame's last header byte, to see it come back
        d
    }

    fn accept42(d: &[u8], from: IpAddr) -> Result<(u32, &[u8]), Refused> {
        accept(d, from, |vni| (vni == 42).then_some(vni), |_| &[PEER][..])
    }

    #[test]
    fn a_peers_datagram_for_a_known_vni_is_accepted_with_its_inner_frame() {
        let d = datagram(42);
        let (net, inner) = accept42(&d, PEER).unwrap();
        assert_eq!((net, inner.len(), inner[13]), (42, 14, 0x42));
    }

    #[test]
    fn every_refusal_has_its_reason() {
        assert_eq!(accept42(&datagram(7), PEER), Err(Refused::UnknownVni));
        assert_eq!(
            accept42(&datagram(42), [10, 240, 0, 9].into()),
            Err(Refused::UnknownPeer)
        );
        assert_eq!(accept42(&datagram(42)[..21], PEER), Err(Refused::Malformed));
        let mut no_i = datagram(42);
        no_i[0] = 0;
        assert_eq!(accept42(&no_i, PEER), Err(Refused::Malformed));
    }
}
