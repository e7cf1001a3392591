//! Subnets, for the limits that keep one operator from filling a node's tables,
//! meshes and slots.

use std::net::IpAddr;

/// A subnet key: the /24 of an IPv4 address, the /48 of an IPv6 one.
pub fn subnet(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[0], o[1], o[2], o[3], o[4], o[5]]
        }
    }
}
