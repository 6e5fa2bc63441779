//! Choosing where the network runs: a GPU through wgpu (Vulkan/Metal/DX12) or the pure-Rust
//! `flex` CPU backend.

use std::fmt;
use std::str::FromStr;

use burn::cubecl::config::cache::CacheConfig;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::tensor::{Device, DeviceKind};

/// What the user asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A hardware GPU adapter if one exists, else the CPU.
    #[default]
    Auto,
    /// wgpu on the best adapter; software adapters are used with a warning.
    Gpu,
    /// The pure-Rust CPU backend with streamtrack's fused convolution kernels.
    Cpu,
    /// The pure-Rust CPU backend with Burn's stock kernels only (a baseline for benchmarks).
    #[serde(rename = "cpu-burn")]
    CpuBurn,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            "cpu-burn" => Ok(Self::CpuBurn),
            other => Err(format!(
                "unknown device '{other}' (expected auto, gpu, cpu or cpu-burn)"
            )),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
            Self::CpuBurn => "cpu-burn",
        })
    }
}

/// A resolved compute device and a human-readable description of it.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    /// e.g. `cpu (flex, 2 threads)` or `wgpu: NVIDIA H100 (Vulkan, DiscreteGpu)`.
    pub description: String,
    /// True for wgpu devices.
    pub is_gpu: bool,
    /// Whether convolutions take streamtrack's fused CPU kernels (Flex devices only).
    pub fast_cpu_conv: bool,
    /// Whether frames are letterboxed on the device from their uploaded bytes (GPU devices)
    /// instead of on the CPU.
    pub letterbox_on_device: bool,
}

impl ComputeDevice {
    /// The pure-Rust CPU backend with the fused convolution kernels.
    pub fn cpu() -> Self {
        Self {
            device: Device::flex(),
            description: format!(
                "cpu (burn flex + fused conv, {} threads)",
                rayon::current_num_threads()
            ),
            is_gpu: false,
            fast_cpu_conv: true,
            letterbox_on_device: false,
        }
    }

    /// The pure-Rust CPU backend with Burn's stock kernels only.
    pub fn cpu_burn() -> Self {
        Self {
            description: format!("cpu (burn flex, {} threads)", rayon::current_num_threads()),
            fast_cpu_conv: false,
            ..Self::cpu()
        }
    }

    /// Resolves `choice` against the adapters present on this machine.
    pub fn resolve(choice: DeviceChoice) -> Result<Self, String> {
        match choice {
            DeviceChoice::Cpu => return Ok(Self::cpu()),
            DeviceChoice::CpuBurn => return Ok(Self::cpu_burn()),
            DeviceChoice::Auto | DeviceChoice::Gpu => {}
        }
        let adapters = gpu_adapters();
        let hardware = adapters
            .iter()
            .find(|a| a.device_type != wgpu::DeviceType::Cpu);
        match (choice, hardware, adapters.first()) {
            (_, Some(adapter), _) => Ok(Self::wgpu(adapter)),
            (DeviceChoice::Gpu, None, Some(software)) => {
                tracing::warn!(
                    "no hardware GPU found; using the software adapter '{}', which is very slow",
                    software.name
                );
                Ok(Self::wgpu(software))
            }
            (DeviceChoice::Gpu, None, None) => {
                Err("--device gpu: no wgpu adapter (Vulkan, Metal or DX12) was found".into())
            }
            _ => {
                tracing::info!("no hardware GPU adapter found; running on the CPU");
                Ok(Self::cpu())
            }
        }
    }

    fn wgpu(adapter: &wgpu::AdapterInfo) -> Self {
        keep_gpu_tuning_in_cache();
        let kind = match adapter.device_type {
            wgpu::DeviceType::Cpu => DeviceKind::Cpu,
            _ => DeviceKind::DefaultDevice,
        };
        Self {
            device: Device::wgpu(kind),
            description: format!(
                "wgpu: {} ({:?}, {:?})",
                adapter.name, adapter.backend, adapter.device_type
            ),
            is_gpu: true,
            fast_cpu_conv: false,
            letterbox_on_device: true,
        }
    }

    /// The same device with the letterbox computed on the CPU and uploaded as floats (the
    /// baseline `bench --compare-backends` measures the on-device letterbox against).
    pub fn with_host_letterbox(self) -> Self {
        Self {
            description: format!("{} + CPU letterbox", self.description),
            letterbox_on_device: false,
            ..self
        }
    }
}

/// Every Vulkan, Metal or DX12 adapter wgpu can open, best first (discrete, integrated,
/// virtual, software). OpenGL is not used: Burn computes with compute shaders. The instance
/// is limited to those backends: one with every backend also starts OpenGL/EGL, whose
/// display probing prints `XDG_RUNTIME_DIR is invalid or not set` on a headless machine.
pub fn gpu_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut infos: Vec<wgpu::AdapterInfo> =
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .into_iter()
            .map(|a| a.get_info())
            .collect();
    infos.sort_by_key(|info| match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    });
    infos
}

/// Points CubeCL's persistent environment (autotune results, so a second run skips the
/// kernel benchmarks) at `gpu/` in streamtrack's cache folder, next to the converted models,
/// unless a `cubecl.toml` / `burn.toml` from the working directory chose a place. Without it
/// CubeCL writes into `target/environment` of any Cargo workspace it runs in. Only effective
/// before the first GPU device is created.
fn keep_gpu_tuning_in_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(dir) = super::default_cache_dir() else {
            return;
        };
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if matches!(config.environment.path, CacheConfig::Target) {
            config.environment.path = CacheConfig::Directory(dir.join("gpu"));
        }
        CubeClRuntimeConfig::try_set(config);
    });
}
