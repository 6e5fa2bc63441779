//! Decoding ONNX constant tensors into `f32` arrays.

use crate::ImportError;
use crate::onnx_proto::{TensorProto, data_type};

/// A dense constant tensor in row-major order, converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl FloatTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Converts an initialiser of any supported element type to `f32`.
pub fn decode(tensor: &TensorProto) -> Result<FloatTensor, ImportError> {
    if !tensor.external_data.is_empty() {
        return Err(ImportError::Unsupported(format!(
            "tensor '{}' is stored in an external data file; export with weights embedded",
            tensor.name
        )));
    }
    let shape: Vec<usize> = tensor.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = shape.iter().product();
    let raw = &tensor.raw_data;
    let data: Vec<f32> = match tensor.data_type {
        data_type::FLOAT if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        data_type::FLOAT => tensor.float_data.clone(),
        data_type::DOUBLE if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        data_type::DOUBLE => tensor.double_data.iter().map(|&v| v as f32).collect(),
        data_type::FLOAT16 if !raw.is_empty() => raw
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        data_type::FLOAT16 => tensor
            .int32_data
            .iter()
            .map(|&v| f16_to_f32(v as u16))
            .collect(),
        data_type::UINT8 if !raw.is_empty() => raw.iter().map(|&v| v as f32).collect(),
        data_type::INT8 if !raw.is_empty() => raw.iter().map(|&v| v as i8 as f32).collect(),
        data_type::UINT8 | data_type::INT8 | data_type::INT32 => {
            tensor.int32_data.iter().map(|&v| v as f32).collect()
        }
        data_type::INT64 if !raw.is_empty() => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        data_type::INT64 => tensor.int64_data.iter().map(|&v| v as f32).collect(),
        other => {
            return Err(ImportError::Unsupported(format!(
                "tensor '{}' has ONNX element type {other}, which is not supported",
                tensor.name
            )));
        }
    };
    if data.len() != count {
        return Err(ImportError::Corrupt(format!(
            "tensor '{}' declares {count} values for shape {shape:?} but stores {}",
            tensor.name,
            data.len()
        )));
    }
    Ok(FloatTensor { shape, data })
}

/// IEEE 754 half precision to single precision.
fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let value = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let magnitude = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -magnitude } else { magnitude };
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values_convert_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn raw_int8_and_float_data_decode() {
        let int8 = TensorProto {
            dims: vec![3],
            data_type: data_type::INT8,
            raw_data: vec![0xff, 0x01, 0x80],
            ..Default::default()
        };
        assert_eq!(decode(&int8).unwrap().data, vec![-1.0, 1.0, -128.0]);
        let floats = TensorProto {
            dims: vec![2],
            data_type: data_type::FLOAT,
            float_data: vec![1.5, -2.0],
            ..Default::default()
        };
        assert_eq!(decode(&floats).unwrap().data, vec![1.5, -2.0]);
    }

    #[test]
    fn size_mismatch_is_reported_as_corrupt() {
        let tensor = TensorProto {
            name: "w".into(),
            dims: vec![4],
            data_type: data_type::FLOAT,
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(matches!(decode(&tensor), Err(ImportError::Corrupt(_))));
    }
}
