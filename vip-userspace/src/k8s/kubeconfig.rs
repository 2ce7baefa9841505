//! The kubeconfig the election uses: never through the VIP it elects.
use std::{collections::BTreeSet, net::IpAddr};

/// The control-plane VIP must be elected against this node's own API server, never through
/// the VIP (whose holder may be the node that is failing). A kubeconfig naming one of our
/// VIPs (kubeadm's admin.conf with the VIP as controlPlaneEndpoint) is pointed at
/// 127.0.0.1 (`[::1]` for an IPv6 VIP) on the same port; the certificate is still checked against the VIP, which is
/// in the API server's SANs.
pub fn elect_locally(kcfg: &mut kube::Config, vips: &BTreeSet<IpAddr>) -> bool {
    let url = &kcfg.cluster_url;
    let Some(host) = url.host() else {
        return false;
    };
    // An IPv6 host is written in brackets in a URL.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = host.parse::<IpAddr>() else {
        return false;
    };
    if !vips.contains(&ip) {
        return false;
    }
    let port = url.port_u16().unwrap_or(443);
    let path = url.path_and_query().map_or("", |p| p.as_str());
    let loopback = if ip.is_ipv6() { "[::1]" } else { "127.0.0.1" };
    let Ok(local) = format!("https://{loopback}:{port}{path}").parse() else {
        return false;
    };
    kcfg.cluster_url = local;
    kcfg.tls_server_name.get_or_insert_with(|| ip.to_string());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_naming_the_vip_is_pointed_at_the_local_api_server() {
        let vips: BTreeSet<IpAddr> = ["192.0.2.100".parse().unwrap()].into();
        let mut k = kube::Config::new("https://192.0.2.100:6443".parse().unwrap());
        assert!(elect_locally(&mut k, &vips));
        assert_eq!(k.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(k.tls_server_name.as_deref(), Some("192.0.2.100"));
        // Any other server (a node address, a DNS name) is used as it is.
        for other in ["https://192.0.2.11:6443", "https://api.example:6443"] {
            let mut k = kube::Config::new(other.parse().unwrap());
            assert!(!elect_locally(&mut k, &vips));
            assert_eq!(k.tls_server_name, None);
        }
    }

    #[test]
    fn an_ipv6_control_plane_vip_is_elected_through_the_ipv6_loopback() {
        let vips: BTreeSet<IpAddr> = ["2001:db8::100".parse().unwrap()].into();
        let mut k = kube::Config::new("https://[2001:db8::100]:6443".parse().unwrap());
        assert!(elect_locally(&mut k, &vips));
        assert_eq!(k.cluster_url.to_string(), "https://[::1]:6443/");
        assert_eq!(k.tls_server_name.as_deref(), Some("2001:db8::100"));
    }
}
