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
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))
}

impl LbMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, DataplaneError> {
        Ok(Self {
            config: Array::try_from(take(ebpf, map_names::CONFIG)?)?,
            services: HashMap::try_from(take(ebpf, map_names::SERVICES)?)?,
            backends: Array::try_from(take(ebpf, map_names::BACKENDS)?)?,
            rings: Array::try_from(take(ebpf, map_names::RINGS)?)?,
        })
    }

    pub fn max_backends(&self) -> u32 {
        self.backends.len()
    }

    /// How many services the rings map has room for at `ring_size` slots each, two rings per
    /// service.
    pub fn ring_capacity(&self, ring_size: u32) -> u32 {
        self.rings.len() / (2 * ring_size.max(1))
    }
}
