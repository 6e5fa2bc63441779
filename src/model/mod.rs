//! The YOLO network in Burn: building it from an ONNX export or a saved record, choosing the
//! device, preprocessing and running it. This is the only module that touches Burn tensors.

mod awake;
pub mod device;
mod fast_cpu;
mod gpu_letterbox;
pub mod int8;
pub mod layers;
pub mod network;
pub mod preprocess;
pub mod profile;
pub mod prune;
mod quantize;
mod shared;
pub mod survivors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use model_import::{Architecture, ModelMetadata};
use preprocess::{Letterbox, letterbox_into, letterbox_levels_into};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use device::{ComputeDevice, DeviceChoice};
use layers::WeightSource;
use network::YoloNetwork;
pub use shared::ModelCache;
pub use survivors::Survivors;

/// Why a model could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Import(#[from] model_import::FileImportError),
    #[error("{}: {message}", path.display())]
    Record { path: PathBuf, message: String },
}

/// Where `.onnx` conversions are cached: `$STREAMTRACK_CACHE`, else
/// `$XDG_CACHE_HOME/streamtrack`, else `~/.cache/streamtrack`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("STREAMTRACK_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("streamtrack")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/streamtrack")))
}

/// The version of what a cached conversion holds, part of its file name: a conversion
/// written by a streamtrack whose card lacked something is made again, not loaded stale.
/// 2: the card says whether the source was an INT8 export.
const CONVERSION_FORMAT: u32 = 2;

/// FNV-1a over the file, with its length: the cache key of a conversion.
fn content_hash(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    for &b in bytes {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// What is stored beside a Burn record so the network can be rebuilt without the ONNX file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub metadata: ModelMetadata,
    pub architecture: Architecture,
    /// The file the weights were imported from.
    pub source: String,
    /// Calibrated INT8 inference (`quantize --calibrate`), where the model has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<int8::Int8Calibration>,
    /// The source was an INT8 export (`ConvInteger`) whose weights the import dequantised:
    /// without a calibration it runs in f32.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dequantized_int8_export: bool,
}

/// The raw network output for a batch: `[batch, 4 + classes, anchors]`, row-major.
#[derive(Debug, Clone)]
pub struct RawOutput {
    pub data: Vec<f32>,
    pub batch: usize,
    pub channels: usize,
    pub anchors: usize,
}

impl RawOutput {
    /// The `[channels, anchors]` block of image `b`.
    pub fn image(&self, b: usize) -> &[f32] {
        let size = self.channels * self.anchors;
        &self.data[b * size..(b + 1) * size]
    }
}

/// A batch of letterboxed frames on the model's device, ready for [`YoloModel::infer`].
#[derive(Debug, Clone)]
pub struct NetworkInput(Input);

/// How a [`NetworkInput`] holds its frames.
#[derive(Debug, Clone)]
enum Input {
    /// `[B, 3, H, W]` values in 0..1 on the model's device.
    Values(Tensor<4>),
    /// The frames as byte levels, on the fast CPU path.
    Levels(ImageLevels),
}

/// Letterboxed frames as their byte levels, `[B, 3, H, W]` planar RGB: the fast CPU path's
/// network input. Its first convolution reads them as `level / 255`, exactly the values'
/// bits, so no f32 copy of the frames (four times their bytes) is written and read back.
#[derive(Debug, Clone)]
pub(crate) struct ImageLevels {
    pub levels: Vec<u8>,
    pub shape: [usize; 4],
    device: burn::tensor::Device,
}

impl ImageLevels {
    /// The frames as the `[B, 3, H, W]` values tensor they stand for.
    pub fn into_values(self) -> Tensor<4> {
        let mut values = vec![0.0; self.levels.len()];
        cpu_conv::widen_levels(&self.levels, &mut values);
        Tensor::from_data(TensorData::new(values, self.shape), &self.device)
    }
}

impl Input {
    fn into_values(self) -> Tensor<4> {
        match self {
            Input::Values(values) => values,
            Input::Levels(levels) => levels.into_values(),
        }
    }
}

impl NetworkInput {
    /// The batches of `inputs` as one batch, in order.
    ///
    /// # Panics
    /// When `inputs` is empty or their image sizes differ.
    pub fn cat(inputs: Vec<NetworkInput>) -> Self {
        let mut inputs: Vec<Input> = inputs.into_iter().map(|input| input.0).collect();
        if inputs.len() == 1 {
            return Self(inputs.remove(0));
        }
        if inputs.iter().all(|input| matches!(input, Input::Levels(_))) {
            let mut batch = inputs.into_iter().map(|input| match input {
                Input::Levels(levels) => levels,
                Input::Values(_) => unreachable!("all inputs are levels"),
            });
            let mut first = batch.next().expect("at least one input");
            for levels in batch {
                assert_eq!(levels.shape[1..], first.shape[1..], "image sizes");
                first.levels.extend_from_slice(&levels.levels);
                first.shape[0] += levels.shape[0];
            }
            return Self(Input::Levels(first));
        }
        Self(Input::Values(Tensor::cat(
            inputs.into_iter().map(Input::into_values).collect(),
            0,
        )))
    }
}

/// `images` letterboxed side by side by `letterbox` into one planar buffer of `size` frames
/// (the network takes ownership of it, so it is allocated per batch).
fn letterbox_batch<T: Clone + Default + Send>(
    images: &[&RgbImage],
    size: (u32, u32),
    letterbox: impl Fn(&RgbImage, (u32, u32), &mut [T]) -> Letterbox + Sync,
) -> (Vec<T>, Vec<Letterbox>) {
    let per_image = 3 * size.0 as usize * size.1 as usize;
    let mut buffer = vec![T::default(); per_image * images.len()];
    let letterboxes = buffer
        .par_chunks_mut(per_image)
        .zip(images.par_iter())
        .map(|(frame, image)| letterbox(image, size, frame))
        .collect();
    (buffer, letterboxes)
}

/// A loaded YOLO detector network on a device.
#[derive(Debug, Clone)]
pub struct YoloModel {
    network: YoloNetwork,
    pub card: ModelCard,
    pub device: ComputeDevice,
    /// The convolutions that run in INT8 (from `card.int8`, on the CPU only).
    int8_plan: Option<Arc<int8::Int8Plan>>,
}

impl YoloModel {
    /// Loads an Ultralytics `.onnx` export or a record written by [`YoloModel::save`]
    /// (`.bpk` with its `.json` card beside it). An `.onnx` conversion is cached as a record
    /// in the user's cache folder (see [`default_cache_dir`]).
    pub fn load(path: &Path, device: ComputeDevice) -> Result<Self, ModelError> {
        Self::load_cached(path, device, default_cache_dir().as_deref())
    }

    /// [`YoloModel::load`] with an explicit cache folder (`None`: no cache).
    pub fn load_cached(
        path: &Path,
        device: ComputeDevice,
        cache_dir: Option<&Path>,
    ) -> Result<Self, ModelError> {
        if path.extension().is_some_and(|e| e == "bpk") {
            let mut model = Self::load_record(path, device)?;
            model.card.source = path.display().to_string();
            model.note_dequantized_int8_export(path);
            return Ok(model);
        }
        let bytes = std::fs::read(path).map_err(|e| model_import::FileImportError {
            path: path.to_path_buf(),
            reason: e.into(),
        })?;
        let cached = cache_dir.map(|dir| {
            dir.join(format!(
                "{:016x}-v{CONVERSION_FORMAT}.bpk",
                content_hash(&bytes)
            ))
        });
        if let Some(record) = cached.as_deref().filter(|r| r.exists()) {
            match Self::load_record(record, device.clone()) {
                Ok(mut model) => {
                    tracing::info!(
                        "loaded {} from the cached conversion {}",
                        path.display(),
                        record.display()
                    );
                    model.card.source = path.display().to_string();
                    model.note_dequantized_int8_export(path);
                    return Ok(model);
                }
                Err(e) => tracing::warn!("ignoring a stale cached conversion: {e}"),
            }
        }
        let imported =
            model_import::import_bytes(&bytes).map_err(|reason| model_import::FileImportError {
                path: path.to_path_buf(),
                reason,
            })?;
        let model = Self::from_imported(imported, path, device);
        if let Some(record) = cached {
            let saved = record
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .map_err(|e| e.to_string())
                .and_then(|_| model.save(&record).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                tracing::debug!("could not cache the conversion: {e}");
            }
        }
        Ok(model)
    }

    /// Builds the network for an imported export (`source` names it in logs and the card).
    pub fn from_imported(
        imported: model_import::ImportedModel,
        source: &Path,
        device: ComputeDevice,
    ) -> Self {
        if let Some(anomaly) = imported.weight_anomalies() {
            tracing::warn!(
                "{}: the weights look corrupt ({anomaly}); detections will be meaningless",
                source.display()
            );
        }
        let network = YoloNetwork::new(
            &imported.architecture,
            WeightSource::Imported(&imported.weights),
            &device.device,
        );
        tracing::info!(
            "loaded {} {}{} ({} classes, input {}x{}) from {}",
            imported.architecture.family,
            imported.architecture.family.to_string().to_lowercase(),
            imported
                .architecture
                .scale
                .map(String::from)
                .unwrap_or_default(),
            imported.metadata.names.len(),
            imported.metadata.imgsz[1],
            imported.metadata.imgsz[0],
            source.display()
        );
        let model = Self {
            network,
            card: ModelCard {
                metadata: imported.metadata,
                architecture: imported.architecture,
                source: source.display().to_string(),
                int8: None,
                dequantized_int8_export: imported.quantized_weights,
            },
            device,
            int8_plan: None,
        };
        model.note_dequantized_int8_export(source);
        model
    }

    /// Says, for an INT8 export whose weights the import dequantised, that it runs in f32
    /// and how to make a model that runs the INT8 kernels.
    fn note_dequantized_int8_export(&self, source: &Path) {
        if self.card.dequantized_int8_export && self.card.int8.is_none() {
            tracing::info!(
                "{}: an INT8 export (weights only, activations quantised at run time): its \
                 weights are dequantised and it runs in f32; `streamtrack quantize -m {} \
                 --calibrate VIDEO -o MODEL-int8.bpk` makes a model whose convolutions run in \
                 INT8 on the CPU",
                source.display(),
                source.display()
            );
        }
    }

    /// A copy whose convolution weights are Burn INT8 tensors (see [`quantize`]): saved, it
    /// takes about a quarter of the space; loaded, it is dequantised and runs in f32.
    pub fn quantized(&self) -> Self {
        Self {
            network: self.network.clone().map(&mut quantize::WeightQuantizer),
            ..self.clone()
        }
    }

    /// The same weights, dequantised where they are INT8 (a no-op for float models).
    pub fn dequantized(self) -> Self {
        Self {
            network: self.network.map(&mut quantize::Dequantizer),
            ..self
        }
    }

    fn load_record(path: &Path, device: ComputeDevice) -> Result<Self, ModelError> {
        let error = |message: String| ModelError::Record {
            path: path.to_path_buf(),
            message,
        };
        let card_path = path.with_extension("json");
        let card_text = std::fs::read_to_string(&card_path).map_err(|e| {
            error(format!(
                "cannot read the model card {}: {e}",
                card_path.display()
            ))
        })?;
        let card: ModelCard = serde_json::from_str(&card_text).map_err(|e| {
            error(format!(
                "model card {} is invalid: {e}",
                card_path.display()
            ))
        })?;
        model_import::architecture::output_channels(&card.architecture)
            .map_err(|e| error(e.to_string()))?;
        let network = YoloNetwork::new(&card.architecture, WeightSource::Zeros, &device.device)
            .try_load_file(path)
            .map_err(|e| error(format!("not a matching Burn record: {e}")))?;
        let calibration = card.int8.clone();
        let model = Self {
            network,
            card,
            device,
            int8_plan: None,
        }
        .dequantized();
        Ok(match calibration {
            Some(calibration) => {
                let model = model.with_int8(calibration);
                if model.int8_plan.is_some() {
                    tracing::info!("{}: INT8 convolutions on the CPU", path.display());
                } else if model.device.fast_cpu_conv {
                    tracing::warn!(
                        "{}: the INT8 calibration does not match the network; running in f32",
                        path.display()
                    );
                } else {
                    tracing::info!(
                        "{}: INT8 calibration ignored on this device: weights dequantised, f32",
                        path.display()
                    );
                }
                model
            }
            None => model,
        })
    }

    /// The model with `calibration` in its card and, on the CPU's fast path, in force: the
    /// convolutions it marks run in INT8.
    pub fn with_int8(mut self, calibration: int8::Int8Calibration) -> Self {
        self.int8_plan = if self.device.fast_cpu_conv {
            int8::plan(&self.network, &calibration).map(Arc::new)
        } else {
            None
        };
        self.card.int8 = Some(calibration);
        self
    }

    /// Runs the network in f32 on `image` and returns the range of every convolution's
    /// input, in network order (see [`int8::Int8Calibration`]); the model must be on the CPU.
    pub fn input_ranges(&self, image: &RgbImage) -> Vec<(f32, f32)> {
        let ranges = int8::recording_ranges(|| self.forward_f32(image));
        int8::convolutions(&self.network)
            .iter()
            .map(|c| ranges.get(&c.id).copied().unwrap_or((0.0, 0.0)))
            .collect()
    }

    /// Runs the network in f32 on `image` and adds every convolution's input to its
    /// histogram (`histograms` in network order).
    pub fn add_to_histograms(&self, image: &RgbImage, histograms: &mut [int8::Histogram]) {
        let convolutions = int8::convolutions(&self.network);
        let by_id = convolutions
            .iter()
            .zip(histograms.iter_mut())
            .map(|(c, h)| (c.id, std::mem::replace(h, int8::Histogram::new(0.0, 0.0))))
            .collect();
        let mut filled = int8::recording_histograms(by_id, || self.forward_f32(image));
        for (c, h) in convolutions.iter().zip(histograms) {
            *h = filled
                .remove(&c.id)
                .expect("every convolution's histogram comes back");
        }
    }

    /// One f32 forward pass on the fast CPU path, for calibration.
    fn forward_f32(&self, image: &RgbImage) {
        let (input, _) = self.letterbox(&[image]);
        let images = input.0.into_values();
        int8::with_plan(None, || {
            fast_cpu::with_fast_path(true, || self.network.forward(images))
        });
    }

    /// Input channels per group of every convolution, in network order.
    pub fn convolution_inputs(&self) -> Vec<usize> {
        int8::convolutions(&self.network)
            .iter()
            .map(|c| c.input_channels)
            .collect()
    }

    /// Writes the weights as a Burn record (`path`, burnpack) and the card beside it (`.json`).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let error = |message: String| ModelError::Record {
            path: path.to_path_buf(),
            message,
        };
        let card = serde_json::to_string_pretty(&self.card).expect("card serialises");
        std::fs::write(path.with_extension("json"), card)
            .map_err(|e| error(format!("cannot write the model card: {e}")))?;
        self.network
            .clone()
            .save_file(path)
            .map_err(|e| error(format!("cannot write the record: {e}")))
    }

    /// Network input size `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        let [h, w] = self.card.metadata.imgsz;
        (w as u32, h as u32)
    }

    /// Runs the network at `size x size` instead of the export's input size (the network is
    /// fully convolutional; `size` must pass [`model_import::metadata::check_input_side`]).
    pub fn set_input_size(&mut self, size: usize) -> Result<(), String> {
        model_import::metadata::check_input_side(size)?;
        self.card.metadata.imgsz = [size, size];
        Ok(())
    }

    /// Class names by id.
    pub fn class_names(&self) -> &[String] {
        &self.card.metadata.names
    }

    /// Letterboxes `images` into one network input batch. Where the device
    /// [letterboxes](ComputeDevice::letterbox_on_device), each frame's bytes are uploaded and
    /// one kernel writes its input; on the fast CPU path the CPU writes planar byte levels
    /// ([`ImageLevels`]), which the first convolution reads; otherwise the CPU writes planar
    /// floats that are uploaded once. All give the same values.
    pub fn letterbox(&self, images: &[&RgbImage]) -> (NetworkInput, Vec<Letterbox>) {
        let size = self.input_size();
        if self.device.letterbox_on_device {
            let (frames, letterboxes): (Vec<_>, Vec<_>) = images
                .iter()
                .map(|image| gpu_letterbox::letterbox_on_device(image, size, &self.device.device))
                .unzip();
            return (
                NetworkInput(Input::Values(Tensor::cat(frames, 0))),
                letterboxes,
            );
        }
        if self.device.fast_cpu_conv {
            let (levels, letterboxes) = letterbox_batch(images, size, letterbox_levels_into);
            let shape = [images.len(), 3, size.1 as usize, size.0 as usize];
            let device = self.device.device.clone();
            let levels = ImageLevels {
                levels,
                shape,
                device,
            };
            return (NetworkInput(Input::Levels(levels)), letterboxes);
        }
        let (pixels, letterboxes) = letterbox_batch(images, size, letterbox_into);
        (self.planar_input(pixels, images.len()), letterboxes)
    }

    /// A network input from `batch` letterboxed images as planar host floats
    /// (`batch * 3 * h * w`).
    pub fn planar_input(&self, pixels: Vec<f32>, batch: usize) -> NetworkInput {
        let (w, h) = self.input_size();
        NetworkInput(Input::Values(Tensor::<4>::from_data(
            TensorData::new(pixels, [batch, 3, h as usize, w as usize]),
            &self.device.device,
        )))
    }

    /// Runs the network on a letterboxed batch and reads the whole head output back.
    pub fn infer(&self, input: NetworkInput) -> RawOutput {
        let output = self.forward(input);
        let [batch, channels, anchors] = output.dims();
        let data = output
            .into_data()
            .try_into_vec::<f32>()
            .expect("network output is f32");
        RawOutput {
            data,
            batch,
            channels,
            anchors,
        }
    }

    /// Runs the network and reads back only the anchors whose best class score is above
    /// `floor` (see [`survivors`]), trying `capacity` columns per image first.
    pub fn infer_survivors(&self, input: NetworkInput, floor: f32, capacity: usize) -> Survivors {
        survivors::read_survivors(self.forward(input), floor, capacity)
    }

    /// True when reading back [`Survivors`] beats reading the whole head output: the output
    /// lives on a GPU and has more rows than the survivors' six.
    pub fn filters_on_device(&self) -> bool {
        self.device.is_gpu && 4 + self.class_names().len() > survivors::ROWS
    }

    /// One forward pass. On the CPU it runs on a thread of rayon's pool, which the kernels'
    /// parallel loops then share with one other worker, instead of on the calling thread,
    /// which would block and wake once per layer (about a tenth of the CPU time went to
    /// those context switches).
    fn forward(&self, input: NetworkInput) -> Tensor<3> {
        let run = || {
            int8::with_plan(self.int8_plan.clone(), || {
                fast_cpu::with_fast_path(self.device.fast_cpu_conv, || match input.0 {
                    Input::Values(images) => self.network.forward(images),
                    Input::Levels(levels) => self.network.forward_levels(levels),
                })
            })
        };
        if self.device.fast_cpu_conv {
            profile::in_rayon_pool(|| awake::with_workers_awake(run))
        } else {
            run()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::network::Layer;
    use super::*;

    /// On the fast CPU path frames go in as their byte levels, which the stem reads as
    /// `level / 255`: the network's output is bit for bit that of the frames' f32 values,
    /// for one frame and for a batch of two, letterboxed together or batched afterwards.
    #[test]
    fn byte_levels_give_the_output_of_their_values() {
        let path = Path::new("../shared/data/models/yolo11n-coco-320.onnx");
        let model = YoloModel::load(path, ComputeDevice::cpu()).expect("test model loads");
        let images: Vec<RgbImage> = ["bus", "zidane"]
            .iter()
            .map(|name| {
                let path = format!("../shared/data/images/{name}.jpg");
                crate::video::images::read_image(path.as_ref()).expect("test image reads")
            })
            .collect();
        let Layer::Conv(stem) = &model.network.layers[0] else {
            panic!("YOLO starts with a convolution")
        };
        let size = model.input_size();
        let bits = |output: RawOutput| output.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for frames in [&images[..1], &images[..]] {
            let frames: Vec<&RgbImage> = frames.iter().collect();
            let (input, _) = model.letterbox(&frames);
            let Input::Levels(levels) = &input.0 else {
                panic!("the fast CPU path takes byte levels")
            };
            let stem_output = fast_cpu::with_fast_path(true, || stem.forward_levels(levels));
            assert!(stem_output.is_some(), "the stem reads the levels");
            let (values, _) = letterbox_batch(&frames, size, letterbox_into);
            let from_values = bits(model.infer(model.planar_input(values, frames.len())));
            assert_eq!(bits(model.infer(input)), from_values);
            // The frames' levels made one by one and batched, as the engine batches streams.
            let one_by_one = frames.iter().map(|&frame| model.letterbox(&[frame]).0);
            let batched = NetworkInput::cat(one_by_one.collect());
            assert!(matches!(batched.0, Input::Levels(_)));
            assert_eq!(bits(model.infer(batched)), from_values);
        }
    }
}
