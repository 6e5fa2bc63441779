//! Index over an ONNX graph: convolutions by module path, nodes by name, constants by tensor.

use std::collections::{HashMap, HashSet};

use crate::ImportError;
use crate::onnx_proto::{GraphProto, NodeProto, TensorProto};
use crate::tensor::{FloatTensor, decode};

/// A `Conv` or `ConvInteger` node with its weight geometry.
#[derive(Debug, Clone)]
pub struct ConvNode {
    /// Node name, e.g. `/model.2/m.0/cv1/conv/Conv`.
    pub name: String,
    /// The activation tensor the convolution reads.
    pub input: String,
    /// Initialiser holding the weight (`.weight` or `.weight_quantized`).
    pub weight: String,
    /// Initialiser holding the bias when the node takes it as its third input.
    pub bias_input: Option<String>,
    pub c_out: usize,
    pub c_in_per_group: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

/// Lookup tables over one graph.
pub struct GraphIndex {
    convs: HashMap<String, ConvNode>,
    conv_order: Vec<String>,
    node_names: HashSet<String>,
    nodes: Vec<NodeProto>,
    producers: HashMap<String, usize>,
    inputs: Vec<String>,
    initializers: HashMap<String, TensorProto>,
}

/// Attribute accessors for nodes.
pub trait NodeAttributes {
    /// Integer-list attribute, empty when absent.
    fn ints(&self, name: &str) -> Vec<i64>;
    /// Integer attribute, `default` when absent.
    fn int(&self, name: &str, default: i64) -> i64;
}

impl NodeAttributes for NodeProto {
    fn ints(&self, name: &str) -> Vec<i64> {
        self.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
            .unwrap_or_default()
    }

    fn int(&self, name: &str, default: i64) -> i64 {
        self.attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.i)
    }
}

impl GraphIndex {
    /// Indexes `graph`; fails on convolutions whose geometry we cannot represent.
    pub fn new(graph: GraphProto) -> Result<Self, ImportError> {
        let initializers: HashMap<String, TensorProto> = graph
            .initializer
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut index = Self {
            convs: HashMap::new(),
            conv_order: Vec::new(),
            node_names: graph.node.iter().map(|n| n.name.clone()).collect(),
            producers: HashMap::new(),
            inputs: graph.input.iter().map(|v| v.name.clone()).collect(),
            nodes: Vec::new(),
            initializers,
        };
        for (i, node) in graph.node.iter().enumerate() {
            for out in &node.output {
                index.producers.insert(out.clone(), i);
            }
            if node.op_type == "Conv" || node.op_type == "ConvInteger" {
                index.add_conv(node)?;
            }
        }
        index.nodes = graph.node;
        Ok(index)
    }

    fn add_conv(&mut self, node: &NodeProto) -> Result<(), ImportError> {
        let weight = node.input.get(1).cloned().unwrap_or_default();
        let Some(path) = weight
            .strip_suffix(".weight_quantized")
            .or_else(|| weight.strip_suffix(".weight"))
            .map(str::to_string)
        else {
            return Err(ImportError::Unsupported(format!(
                "convolution '{}' reads weight '{weight}', which has no Ultralytics module name",
                node.name
            )));
        };
        let dims = self
            .initializers
            .get(&weight)
            .map(|t| t.dims.clone())
            .ok_or_else(|| {
                ImportError::Unsupported(format!(
                    "convolution '{}' has a computed weight '{weight}'",
                    node.name
                ))
            })?;
        let geometry_error =
            |what: &str| ImportError::Unsupported(format!("convolution '{}': {what}", node.name));
        if dims.len() != 4 || dims[2] != dims[3] {
            return Err(geometry_error("only square 2-D kernels are supported"));
        }
        let strides = node.ints("strides");
        let pads = node.ints("pads");
        if strides.windows(2).any(|w| w[0] != w[1]) || pads.windows(2).any(|w| w[0] != w[1]) {
            return Err(geometry_error("asymmetric strides or padding"));
        }
        if node.ints("dilations").iter().any(|&d| d != 1) {
            return Err(geometry_error("dilated convolution"));
        }
        let bias_input = match node.op_type.as_str() {
            "Conv" => node.input.get(2).filter(|b| !b.is_empty()).cloned(),
            _ => None,
        };
        let conv = ConvNode {
            name: node.name.clone(),
            input: node.input[0].clone(),
            weight,
            bias_input,
            c_out: dims[0] as usize,
            c_in_per_group: dims[1] as usize,
            kernel: dims[2] as usize,
            stride: strides.first().copied().unwrap_or(1) as usize,
            padding: pads.first().copied().unwrap_or(0) as usize,
            groups: node.int("group", 1) as usize,
        };
        self.conv_order.push(path.clone());
        self.convs.insert(path, conv);
        Ok(())
    }

    /// True when a convolution with this module path exists.
    pub fn has_conv(&self, path: &str) -> bool {
        self.convs.contains_key(path)
    }

    /// The convolution with this module path.
    pub fn conv(&self, path: &str) -> Result<&ConvNode, ImportError> {
        self.convs
            .get(path)
            .ok_or_else(|| ImportError::Unsupported(format!("expected a convolution named {path}")))
    }

    /// Convolutions whose module path starts with `prefix`, in graph (execution) order.
    pub fn convs_with_prefix(&self, prefix: &str) -> Vec<(&str, &ConvNode)> {
        self.conv_order
            .iter()
            .filter(|p| p.starts_with(prefix))
            .map(|p| (p.as_str(), &self.convs[p]))
            .collect()
    }

    /// True when a node with exactly this name exists.
    pub fn has_node(&self, name: &str) -> bool {
        self.node_names.contains(name)
    }

    /// First node of type `op` whose name starts with `prefix`.
    pub fn node_with_prefix(&self, prefix: &str, op: &str) -> Option<&NodeProto> {
        self.nodes
            .iter()
            .find(|n| n.op_type == op && n.name.starts_with(prefix))
    }

    /// Number of top-level layers (`model.N`), from names of convolutions and nodes.
    pub fn top_level_layer_count(&self) -> usize {
        let from_convs = self.conv_order.iter().filter_map(|p| layer_of_path(p));
        let from_nodes = self.nodes.iter().filter_map(|n| layer_of_node(&n.name));
        from_convs.chain(from_nodes).max().map_or(0, |m| m + 1)
    }

    /// The top-level layer that produced `tensor` (`-1` for the graph input).
    pub fn source_layer(&self, tensor: &str) -> i64 {
        let base = tensor.strip_suffix("_quantized").unwrap_or(tensor);
        if self.inputs.iter().any(|i| i == base) {
            return -1;
        }
        if let Some(layer) = layer_of_node(tensor) {
            return layer as i64;
        }
        self.producers
            .get(tensor)
            .and_then(|&i| layer_of_node(&self.nodes[i].name))
            .map_or(-2, |l| l as i64)
    }

    /// Integer upsampling factor of a `Resize` node, from its constant `scales` input.
    pub fn resize_scale(&self, node: &NodeProto) -> Option<usize> {
        let scales = self.constant(node.input.get(2)?)?;
        let factor = *scales.data.get(2)?;
        (factor >= 1.0 && factor.fract() == 0.0).then_some(factor as usize)
    }

    /// A constant tensor, from an initialiser or a `Constant` node.
    pub fn constant(&self, name: &str) -> Option<FloatTensor> {
        if let Some(t) = self.initializers.get(name) {
            return decode(t).ok();
        }
        let node = &self.nodes[*self.producers.get(name)?];
        if node.op_type != "Constant" {
            return None;
        }
        node.attribute
            .iter()
            .find_map(|a| a.t.as_ref())
            .and_then(|t| decode(t).ok())
    }

    /// An initialiser by name.
    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.initializers.get(name)
    }
}

/// `model.12.cv1.conv` → 12.
fn layer_of_path(path: &str) -> Option<usize> {
    path.strip_prefix("model.")?.split('.').next()?.parse().ok()
}

/// `/model.12/cv1/conv/Conv` (node or tensor name) → 12.
fn layer_of_node(name: &str) -> Option<usize> {
    name.strip_prefix("/model.")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_from_names() {
        assert_eq!(layer_of_path("model.12.m.0.cv1.conv"), Some(12));
        assert_eq!(layer_of_path("onnx::Conv_3"), None);
        assert_eq!(layer_of_node("/model.6/cv2/act/Mul_output_0"), Some(6));
        assert_eq!(layer_of_node("images"), None);
    }
}
