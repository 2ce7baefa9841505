//! Typed access to the load-balancer maps: config, services, backends, Maglev rings.
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use vip_common::{map_names, BackendValue, Config, LbStats, ServiceKey, ServiceValue};

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

/// Per-service and per-backend counters, summed over CPUs.
pub struct LbStatsReader {
    pub services: PerCpuArray<MapData, LbStats>,
    pub backends: PerCpuArray<MapData, LbStats>,
}

impl LbStatsReader {
    pub fn open(pin_dir: &std::path::Path) -> Result<Self, DataplaneError> {
        use vip_common::pin_names;
        let s = MapData::from_pin(pin_dir.join(pin_names::SVC_STATS))?;
        let b = MapData::from_pin(pin_dir.join(pin_names::BACKEND_STATS))?;
        Ok(Self {
            services: PerCpuArray::try_from(aya::maps::Map::PerCpuArray(s))?,
            backends: PerCpuArray::try_from(aya::maps::Map::PerCpuArray(b))?,
        })
    }

    fn sum(arr: &PerCpuArray<MapData, LbStats>, id: u32) -> LbStats {
        let mut t = LbStats::default();
        if let Ok(v) = arr.get(&id, 0) {
            for s in v.iter() {
                t.add(s);
            }
        }
        t
    }

    pub fn service(&self, id: u32) -> LbStats {
        Self::sum(&self.services, id)
    }

    pub fn backend(&self, id: u32) -> LbStats {
        Self::sum(&self.backends, id)
    }
}
