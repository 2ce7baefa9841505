//! The kubeconfig the election uses: never through the VIP it elects.
use std::{collections::BTreeSet, net::Ipv4Addr};

/// The control-plane VIP must be elected against this node's own API server, never through
/// the VIP (whose holder may be the node that is failing). A kubeconfig naming one of our
/// VIPs (kubeadm's admin.conf with the VIP as controlPlaneEndpoint) is pointed at
/// 127.0.0.1 on the same port; the certificate is still checked against the VIP, which is
/// in the API server's SANs.
pub fn elect_locally(kcfg: &mut kube::Config, vips: &BTreeSet<Ipv4Addr>) -> bool {
    let url = &kcfg.cluster_url;
    let Some(host) = url.host() else {
        return false;
    };
    let Ok(ip) = host.parse::<Ipv4Addr>() else {
        return false;
    };
    if !vips.contains(&ip) {
        return false;
    }
    let port = url.port_u16().unwrap_or(443);
    let path = url.path_and_query().map_or("", |p| p.as_str());
    let Ok(local) = format!("https://127.0.0.1:{port}{path}").parse() else {
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
        let vips: BTreeSet<Ipv4Addr> = ["192.0.2.100".parse().unwrap()].into();
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
}
