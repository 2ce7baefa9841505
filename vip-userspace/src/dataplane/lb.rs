//! Typed access to the load-balancer maps: config, services, backends, Maglev rings.
use aya::{
    maps::{Array, HashMap, MapData},
    Ebpf,
};
use vip_common::{map_names, BackendValue, Config, ServiceKey, ServiceValue};

use super::DataplaneError;

pub struct LbMaps {
    pub config: Array<MapData, Config>,
    pub services: HashMap<MapData, ServiceKey, ServiceValue>,
    pub backends: Array<MapData, BackendValue>,
    pub rings: Array<MapData, u32>,
    /// A second descriptor of `RINGS`, for batched writes (aya has no batch operations).
    pub rings_fd: Option<std::os::fd::OwnedFd>,
    max_services: u32,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
}

impl LbMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        let services = take(ebpf, map_names::SERVICES)?;
        let max_services = match &services {
            aya::maps::Map::HashMap(d) => d.info().map_or(0, |i| i.max_entries()),
            _ => 0,
        };
        let rings = take(ebpf, map_names::RINGS)?;
        let rings_fd = match &rings {
            aya::maps::Map::Array(d) => {
                use std::os::fd::AsFd;
                d.fd().as_fd().try_clone_to_owned().ok()
            }
            _ => None,
        };
        Ok(Self {
            max_services,
            rings_fd,
            config: Array::try_from(take(ebpf, map_names::CONFIG)?)?,
            services: HashMap::try_from(services)?,
            backends: Array::try_from(take(ebpf, map_names::BACKENDS)?)?,
            rings: Array::try_from(rings)?,
        })
    }

    pub fn max_backends(&self) -> u32 {
        self.backends.len()
    }

    /// How many services the services map has room for.
    pub fn max_services(&self) -> u32 {
        self.max_services
    }
}
