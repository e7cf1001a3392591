//! The addresses peers see us on (the observed address each handshake carries),
//! and when one is confirmed enough to announce.
//!
//! A peer can say anything about where it sees us, so one peer's word is worth
//! nothing and many identities from one subnet are worth one: an IP is confirmed
//! once reporters from `confirmations` different subnets (/24, /48) named it. The
//! port is ours, not the observed one (a connection we dialed shows our ephemeral
//! port), so a confirmed IP is announced with our listen port. Memory is bounded:
//! a few candidate IPs, a few subnets each; newcomers replace the least confirmed.

use std::net::IpAddr;

use crate::subnet::subnet;

/// Candidate IPs remembered at once.
const MAX_CANDIDATES: usize = 8;
/// Reporter subnets remembered per candidate (more than any sane threshold).
const MAX_REPORTERS: usize = 8;

/// One IP peers told us they see us on, with who said so.
#[derive(Debug)]
struct Candidate {
    ip: IpAddr,
    reporters: Vec<[u8; 6]>,
    adopted: bool,
}

/// What peers told us about our address.
#[derive(Debug, Default)]
pub(crate) struct ObservedAddrs {
    candidates: Vec<Candidate>,
}

impl ObservedAddrs {
    /// A peer connected from `reporter` says it sees us on `observed`. Returns the
    /// IP once (the first time) it is confirmed by `confirmations` subnets and is not
    /// among `announced` (0 confirmations: never).
    pub(crate) fn record(
        &mut self,
        reporter: IpAddr,
        observed: IpAddr,
        announced: &[IpAddr],
        confirmations: usize,
    ) -> Option<IpAddr> {
        if confirmations == 0
            || observed.is_unspecified()
            || observed.is_multicast()
            || announced.contains(&observed)
        {
            return None;
        }
        let net = subnet(reporter);
        let pos = match self.candidates.iter().position(|c| c.ip == observed) {
            Some(pos) => pos,
            None => {
                if self.candidates.len() >= MAX_CANDIDATES {
                    // The least confirmed one that is not announced makes room.
                    let victim = self
                        .candidates
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| !c.adopted)
                        .min_by_key(|(_, c)| c.reporters.len())
                        .map(|(i, _)| i)?;
                    self.candidates.swap_remove(victim);
                }
                self.candidates.push(Candidate {
                    ip: observed,
                    reporters: Vec::new(),
                    adopted: false,
                });
                self.candidates.len() - 1
            }
        };
        let c = &mut self.candidates[pos];
        if !c.reporters.contains(&net) && c.reporters.len() < MAX_REPORTERS {
            c.reporters.push(net);
        }
        if !c.adopted && c.reporters.len() >= confirmations {
            c.adopted = true;
            return Some(observed);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ip_is_adopted_once_when_three_subnets_agree() {
        let mut o = ObservedAddrs::default();
        let public = ip("203.0.113.7");
        let ours = [ip("10.0.0.5")];
        assert_eq!(o.record(ip("198.51.100.1"), public, &ours, 3), None);
        assert_eq!(
            o.record(ip("198.51.100.2"), public, &ours, 3),
            None,
            "same /24"
        );
        assert_eq!(o.record(ip("192.0.2.9"), public, &ours, 3), None);
        assert_eq!(o.record(ip("100.64.1.1"), public, &ours, 3), Some(public));
        assert_eq!(
            o.record(ip("100.64.9.1"), public, &ours, 3),
            None,
            "only once"
        );
    }

    #[test]
    fn many_identities_from_one_subnet_or_junk_addresses_adopt_nothing() {
        let mut o = ObservedAddrs::default();
        let ours = [ip("10.0.0.5")];
        for i in 1..=200u8 {
            let liar = IpAddr::from([198, 51, 100, i]);
            assert_eq!(o.record(liar, ip("203.0.113.66"), &ours, 3), None);
            let spray = IpAddr::from([203, 0, 113, i]);
            assert_eq!(o.record(liar, spray, &ours, 3), None);
        }
        assert!(o.candidates.len() <= MAX_CANDIDATES);
        for bad in ["0.0.0.0", "224.0.0.1", "10.0.0.5"] {
            for r in ["1.1.1.1", "2.2.2.2", "3.3.3.3"] {
                assert_eq!(o.record(ip(r), ip(bad), &ours, 3), None, "{bad}");
            }
        }
        assert_eq!(
            o.record(ip("1.1.1.1"), ip("203.0.113.9"), &ours, 0),
            None,
            "0 = never adopt"
        );
    }
}
