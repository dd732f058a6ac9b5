//! Flower's records as medseg holds them: a [`RecordDict`] of named
//! [`ArrayRecord`]s, [`MetricRecord`]s and [`ConfigRecord`]s, each an
//! ordered list of named values (Flower's records are ordered
//! dictionaries, and the order is part of what is hashed).

use ndarray::ArrayD;

use super::npy;
use super::proto;
use super::FlowerError;
use crate::weights::Weights;

/// Flower's serialisation type of NumPy arrays (the only one there is).
pub const STYPE_NUMPY: &str = "numpy.ndarray";

/// One array of an [`ArrayRecord`]: NumPy's dtype name, the shape, the
/// serialisation type and the serialised bytes (`numpy.save`).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowerArray {
    /// NumPy's dtype name (`float32`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<i64>,
    /// The serialisation type ([`STYPE_NUMPY`]).
    pub stype: String,
    /// The serialised array.
    pub data: Vec<u8>,
}

impl FlowerArray {
    /// A `float32` array, serialised as NumPy would.
    pub fn from_f32(a: &ArrayD<f32>) -> Self {
        FlowerArray {
            dtype: "float32".into(),
            shape: a.shape().iter().map(|&d| d as i64).collect(),
            stype: STYPE_NUMPY.into(),
            data: npy::write_f32(a),
        }
    }

    /// The array as `f32` (floats and integers are converted). `key`
    /// names it in errors.
    ///
    /// # Errors
    /// Another serialisation type, unreadable data, or a shape other than
    /// the one the record declares.
    pub fn to_f32(&self, key: &str) -> Result<ArrayD<f32>, FlowerError> {
        if self.stype != STYPE_NUMPY {
            return Err(FlowerError::Content(format!(
                "array `{key}`: serialisation type `{}`, expected `{STYPE_NUMPY}`",
                self.stype
            )));
        }
        let a = npy::read_f32(&self.data, &format!("array `{key}`"))?;
        let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
        if shape != self.shape {
            return Err(FlowerError::Content(format!(
                "array `{key}`: declared shape {:?}, data of shape {shape:?}",
                self.shape
            )));
        }
        Ok(a)
    }
}

/// A metric value (Flower's `MetricRecordValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// A float.
    Double(f64),
    /// A signed integer.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A list of floats.
    DoubleList(Vec<f64>),
    /// A list of signed integers.
    IntList(Vec<i64>),
    /// A list of integers, some above `i64::MAX`.
    UIntList(Vec<u64>),
}

impl MetricValue {
    /// The value as a float, for scalars.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetricValue::Double(v) => Some(*v),
            MetricValue::Int(v) => Some(*v as f64),
            MetricValue::UInt(v) => Some(*v as f64),
            _ => None,
        }
    }
}

/// A config value (Flower's `ConfigRecordValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigValue {
    /// A float.
    Double(f64),
    /// A signed integer.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A list of floats.
    DoubleList(Vec<f64>),
    /// A list of signed integers.
    IntList(Vec<i64>),
    /// A list of large integers.
    UIntList(Vec<u64>),
    /// A list of booleans.
    BoolList(Vec<bool>),
    /// A list of strings.
    StrList(Vec<String>),
    /// A list of byte strings.
    BytesList(Vec<Vec<u8>>),
}

impl ConfigValue {
    /// The value as a float, for numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ConfigValue::Double(v) => Some(*v),
            ConfigValue::Int(v) => Some(*v as f64),
            ConfigValue::UInt(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// The value as a non-negative integer, for integers (and floats
    /// without a fraction).
    pub fn as_usize(&self) -> Option<usize> {
        match self {
            ConfigValue::Int(v) if *v >= 0 => Some(*v as usize),
            ConfigValue::UInt(v) => usize::try_from(*v).ok(),
            ConfigValue::Double(v) if *v >= 0.0 && v.fract() == 0.0 => Some(*v as usize),
            _ => None,
        }
    }
}

/// Named arrays, in order.
pub type ArrayRecord = Vec<(String, FlowerArray)>;
/// Named metrics, in order.
pub type MetricRecord = Vec<(String, MetricValue)>;
/// Named config values, in order.
pub type ConfigRecord = Vec<(String, ConfigValue)>;

/// One record of a [`RecordDict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Arrays (a model's weights).
    Arrays(ArrayRecord),
    /// Metrics (with the example count a strategy weighs by).
    Metrics(MetricRecord),
    /// Configuration values.
    Config(ConfigRecord),
}

/// A message's content: named records, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordDict {
    /// The records.
    pub items: Vec<(String, Record)>,
}

impl RecordDict {
    /// The record named `name`.
    pub fn get(&self, name: &str) -> Option<&Record> {
        self.items.iter().find(|(k, _)| k == name).map(|(_, r)| r)
    }
    /// The array record named `name`.
    pub fn arrays(&self, name: &str) -> Option<&ArrayRecord> {
        match self.get(name) {
            Some(Record::Arrays(a)) => Some(a),
            _ => None,
        }
    }
    /// The config record named `name`.
    pub fn config(&self, name: &str) -> Option<&ConfigRecord> {
        match self.get(name) {
            Some(Record::Config(c)) => Some(c),
            _ => None,
        }
    }
    /// The metric record named `name`.
    pub fn metrics(&self, name: &str) -> Option<&MetricRecord> {
        match self.get(name) {
            Some(Record::Metrics(m)) => Some(m),
            _ => None,
        }
    }
    /// Appends (or replaces) the record `name`.
    pub fn insert(&mut self, name: impl Into<String>, record: Record) {
        let name = name.into();
        if let Some(slot) = self.items.iter_mut().find(|(k, _)| *k == name) {
            slot.1 = record;
        } else {
            self.items.push((name, record));
        }
    }
}

/// The value of `key` in a config record.
pub fn config_value<'a>(record: &'a ConfigRecord, key: &str) -> Option<&'a ConfigValue> {
    record.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// `weights` as an array record (keys in `Weights`' sorted order).
pub fn weights_to_arrays(weights: &Weights) -> ArrayRecord {
    weights
        .iter()
        .map(|(k, a)| (k.to_string(), FlowerArray::from_f32(a)))
        .collect()
}

/// An array record as weights.
///
/// # Errors
/// An array that cannot be read as `f32` (named), a key given twice.
pub fn arrays_to_weights(record: &ArrayRecord) -> Result<Weights, FlowerError> {
    let mut w = Weights::new();
    for (k, a) in record {
        if w.insert(k.clone(), a.to_f32(k)?).is_some() {
            return Err(FlowerError::Content(format!("array `{k}` given twice")));
        }
    }
    Ok(w)
}

// ---------------------------------------------------------- protobuf forms

use proto::config_record_value::Value as Cv;
use proto::metric_record_value::Value as Mv;

/// A metric record as its protobuf message (the body of its object).
pub fn metrics_to_proto(m: &MetricRecord) -> proto::MetricRecord {
    proto::MetricRecord {
        items: m
            .iter()
            .map(|(k, v)| proto::metric_record::Item {
                key: k.clone(),
                value: Some(proto::MetricRecordValue {
                    value: Some(match v {
                        MetricValue::Double(x) => Mv::Double(*x),
                        MetricValue::Int(x) => Mv::Sint64(*x),
                        MetricValue::UInt(x) => Mv::Uint64(*x),
                        MetricValue::DoubleList(x) => {
                            Mv::DoubleList(proto::DoubleList { vals: x.clone() })
                        }
                        MetricValue::IntList(x) => {
                            Mv::SintList(proto::SintList { vals: x.clone() })
                        }
                        MetricValue::UIntList(x) => {
                            Mv::UintList(proto::UintList { vals: x.clone() })
                        }
                    }),
                }),
            })
            .collect(),
    }
}

/// A metric record from its protobuf message.
///
/// # Errors
/// An item without a value.
pub fn metrics_from_proto(p: proto::MetricRecord) -> Result<MetricRecord, FlowerError> {
    p.items
        .into_iter()
        .map(|it| {
            let v = it
                .value
                .and_then(|v| v.value)
                .ok_or_else(|| FlowerError::Content(format!("metric `{}` has no value", it.key)))?;
            Ok((
                it.key,
                match v {
                    Mv::Double(x) => MetricValue::Double(x),
                    Mv::Sint64(x) => MetricValue::Int(x),
                    Mv::Uint64(x) => MetricValue::UInt(x),
                    Mv::DoubleList(x) => MetricValue::DoubleList(x.vals),
                    Mv::SintList(x) => MetricValue::IntList(x.vals),
                    Mv::UintList(x) => MetricValue::UIntList(x.vals),
                },
            ))
        })
        .collect()
}

/// A config record as its protobuf message.
pub fn config_to_proto(c: &ConfigRecord) -> proto::ConfigRecord {
    proto::ConfigRecord {
        items: c
            .iter()
            .map(|(k, v)| proto::config_record::Item {
                key: k.clone(),
                value: Some(proto::ConfigRecordValue {
                    value: Some(match v {
                        ConfigValue::Double(x) => Cv::Double(*x),
                        ConfigValue::Int(x) => Cv::Sint64(*x),
                        ConfigValue::UInt(x) => Cv::Uint64(*x),
                        ConfigValue::Bool(x) => Cv::Bool(*x),
                        ConfigValue::Str(x) => Cv::String(x.clone()),
                        ConfigValue::Bytes(x) => Cv::Bytes(x.clone()),
                        ConfigValue::DoubleList(x) => {
                            Cv::DoubleList(proto::DoubleList { vals: x.clone() })
                        }
                        ConfigValue::IntList(x) => {
                            Cv::SintList(proto::SintList { vals: x.clone() })
                        }
                        ConfigValue::UIntList(x) => {
                            Cv::UintList(proto::UintList { vals: x.clone() })
                        }
                        ConfigValue::BoolList(x) => {
                            Cv::BoolList(proto::BoolList { vals: x.clone() })
                        }
                        ConfigValue::StrList(x) => {
                            Cv::StringList(proto::StringList { vals: x.clone() })
                        }
                        ConfigValue::BytesList(x) => {
                            Cv::BytesList(proto::BytesList { vals: x.clone() })
                        }
                    }),
                }),
            })
            .collect(),
    }
}

/// A config record from its protobuf message.
///
/// # Errors
/// An item without a value.
pub fn config_from_proto(p: proto::ConfigRecord) -> Result<ConfigRecord, FlowerError> {
    p.items
        .into_iter()
        .map(|it| {
            let v = it
                .value
                .and_then(|v| v.value)
                .ok_or_else(|| FlowerError::Content(format!("config `{}` has no value", it.key)))?;
            Ok((
                it.key,
                match v {
                    Cv::Double(x) => ConfigValue::Double(x),
                    Cv::Sint64(x) => ConfigValue::Int(x),
                    Cv::Uint64(x) => ConfigValue::UInt(x),
                    Cv::Bool(x) => ConfigValue::Bool(x),
                    Cv::String(x) => ConfigValue::Str(x),
                    Cv::Bytes(x) => ConfigValue::Bytes(x),
                    Cv::DoubleList(x) => ConfigValue::DoubleList(x.vals),
                    Cv::SintList(x) => ConfigValue::IntList(x.vals),
                    Cv::UintList(x) => ConfigValue::UIntList(x.vals),
                    Cv::BoolList(x) => ConfigValue::BoolList(x.vals),
                    Cv::StringList(x) => ConfigValue::StrList(x.vals),
                    Cv::BytesList(x) => ConfigValue::BytesList(x.vals),
                },
            ))
        })
        .collect()
}
