//! Loading and saving weights as HF transformers does: `model.safetensors`
//! with HF's tensor names next to a `config.json`, so that transformers can
//! load what we train and we can fine-tune its checkpoints.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

use crate::config::T5Config;
use crate::error::{Result, TrainError};
use crate::model::T5;
use t5mix_pipeline::atomic::write_atomic;

/// Tensors by name: stored shape and f32 values.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads every tensor of a safetensors file as f32 (BF16 and F16 widened).
pub fn read_safetensors(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    decode_safetensors(&bytes, path)
}

/// Like [`read_safetensors`] on bytes in memory (`path` names them in errors).
pub fn decode_safetensors(bytes: &[u8], path: &Path) -> Result<NamedTensors> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| TrainError::checkpoint(path, format!("not a safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            StDtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StDtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            StDtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(TrainError::checkpoint(
                    path,
                    format!("tensor {name}: dtype {other:?} is not supported (F32, BF16, F16)"),
                ))
            }
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Loads an HF-layout checkpoint folder (`config.json` + `model.safetensors`).
/// The output layer is untied exactly when `lm_head.weight` is stored.
pub fn load_model<D: Device<f32>>(dir: &Path, dev: &D) -> Result<T5<D>> {
    let mut cfg = T5Config::from_file(&dir.join("config.json"))?;
    let path = dir.join("model.safetensors");
    // at least 2 bytes a weight (BF16): a config larger than its weights is refused
    // before the model is allocated
    let bytes = std::fs::metadata(&path)
        .map_err(|e| TrainError::io(&path, e))?
        .len();
    if cfg.estimated_params() * 2 > bytes as u128 + (1 << 20) {
        return Err(TrainError::checkpoint(
            dir,
            format!(
                "config.json describes {} parameters but model.safetensors holds {bytes} bytes",
                cfg.estimated_params()
            ),
        ));
    }
    let tensors = read_safetensors(&path)?;
    let untied = tensors.contains_key("lm_head.weight");
    if cfg.scale_decoder_outputs.is_none() {
        cfg.scale_decoder_outputs = Some(cfg.tie_word_embeddings);
    }
    cfg.tie_word_embeddings = !untied;
    let mut model = T5::new(cfg, dev, None);
    set_params(&mut model, &tensors, &path)?;
    Ok(model)
}

/// Copies named tensors into the model's parameters, checking names and shapes.
pub fn set_params<D: Device<f32>>(
    model: &mut T5<D>,
    tensors: &NamedTensors,
    path: &Path,
) -> Result<()> {
    let known_aliases = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"];
    let info = model.param_info().to_vec();
    for name in tensors.keys() {
        if !known_aliases.contains(&name.as_str()) && !info.iter().any(|i| &i.name == name) {
            return Err(TrainError::checkpoint(
                path,
                format!("tensor {name} does not belong to this model configuration"),
            ));
        }
    }
    for (i, pi) in info.iter().enumerate() {
        let (shape, values) = tensors.get(&pi.name).ok_or_else(|| {
            TrainError::checkpoint(path, format!("tensor {} is missing", pi.name))
        })?;
        if shape != &pi.hf_shape {
            return Err(TrainError::checkpoint(
                path,
                format!(
                    "tensor {} has shape {:?}, the configuration needs {:?}",
                    pi.name, shape, pi.hf_shape
                ),
            ));
        }
        model.params[i].copy_from(values);
    }
    Ok(())
}

/// Encodes named f32 tensors as safetensors bytes (names sorted, as the
/// format requires; `metadata` goes into the header).
pub fn encode_safetensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            let view = TensorView::new(StDtype::F32, s.clone(), b)
                .map_err(|e| TrainError::Data(format!("tensor {n}: {e}")))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata)
        .map_err(|e| TrainError::Data(format!("safetensors: {e}")))
}

/// The model's parameters as named HF tensors.
pub fn named_tensors<D: Device<f32>>(model: &T5<D>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    model
        .param_info()
        .iter()
        .zip(&model.params)
        .map(|(pi, p)| (pi.name.clone(), pi.hf_shape.clone(), p.as_vec()))
        .collect()
}

/// Saves `config.json` and `model.safetensors` (F32) into `dir`, each
/// written under a temporary name and renamed when complete.
pub fn save_model<D: Device<f32>>(model: &T5<D>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = encode_safetensors(&named_tensors(model), Some(meta))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let cfg = serde_json::to_vec_pretty(&model.cfg.to_json()).expect("json");
    write_atomic(&dir.join("config.json"), &cfg)?;
    Ok(())
}
