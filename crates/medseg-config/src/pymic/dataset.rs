//! The `[dataset]` section: data root, manifests, batch sizes and the
//! transform lists.

use super::method::Method;
use super::paths::{normalise, relative};
use super::transforms::{TfContext, Translator, LABEL_ONLY};
use super::{number, Ctx, Effect, PymicError, PymicOptions};
use serde_json::{json, Map, Value};
use std::path::Path;

const SEC: &str = "dataset";

fn names(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        Some(Value::String(s)) => vec![s],
        _ => vec![],
    }
}

fn without_label_steps(v: &[String]) -> Vec<String> {
    v.iter()
        .filter(|n| !LABEL_ONLY.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// The medseg `[dataset]` table, and `dataset.patch_size` (PyMIC's default
/// window) for the testing section.
pub(crate) fn dataset(
    cx: &mut Ctx,
    opts: &PymicOptions,
    class_num: usize,
    method: Option<&Method>,
) -> Result<(Map<String, Value>, Option<Value>), PymicError> {
    let mut d = Map::new();
    let root_v = match cx.get(SEC, "train_dir") {
        Some(v) => v,
        None => cx.get(SEC, "root_dir").ok_or_else(|| PymicError::Invalid {
            key: "dataset.train_dir".into(),
            message: "required by PyMIC (the folder the manifests' paths are relative to) \
                      and missing"
                .into(),
        })?,
    };
    let root_s = root_v.as_str().unwrap_or_default().to_string();
    d.insert("root".into(), json!(root_s));
    let root_abs = normalise(&opts.working_dir, Path::new(&root_s));
    // PyMIC reads manifests relative to its working folder; medseg relative to the root
    let csv = |cx: &mut Ctx, key: &str| -> Option<Value> {
        let v = cx.get(SEC, key)?;
        let s = v.as_str()?.to_string();
        let abs = normalise(&opts.working_dir, Path::new(&s));
        Some(json!(relative(&root_abs, &abs).to_string_lossy()))
    };
    let train = csv(cx, "train_csv").ok_or_else(|| PymicError::Invalid {
        key: "dataset.train_csv".into(),
        message: "required by PyMIC and missing".into(),
    })?;
    d.insert("train_csv".into(), train);
    for (pymic, medseg) in [
        ("valid_csv", "valid_csv"),
        ("test_csv", "test_csv"),
        ("train_csv_unlab", "train_unlabelled_csv"),
        ("train_csv_noise", "train_noisy_csv"),
    ] {
        if let Some(v) = csv(cx, pymic) {
            d.insert(medseg.into(), v);
        }
    }
    for k in ["valid_dir", "test_dir"] {
        let same = cx
            .peek(SEC, k)
            .and_then(Value::as_str)
            .map(|s| normalise(&opts.working_dir, Path::new(s)) == root_abs);
        match same {
            Some(true) => cx.note(SEC, k, Effect::NoEffect, "the same folder as train_dir"),
            Some(false) => cx.note(
                SEC,
                k,
                Effect::ChangesResults,
                "medseg reads every manifest relative to one root (train_dir)",
            ),
            None => {}
        }
    }
    let channels = match cx.get(SEC, "modal_num") {
        Some(v) => number(&v, "dataset.modal_num")? as usize,
        None => 1,
    };
    d.insert("in_channels".into(), json!(channels));
    d.insert("class_num".into(), json!(class_num));
    for (pymic, medseg) in [
        ("train_batch_size", "train_batch_size"),
        ("train_batch_size_unlab", "train_batch_size_unlab"),
        ("train_batch_size_noise", "train_batch_size_noisy"),
    ] {
        if let Some(v) = cx.get(SEC, pymic) {
            d.insert(medseg.into(), v);
        }
    }
    // PyMIC's default is 8 workers (16 for the unlabelled loader); speed only
    if let Some(v) = cx
        .get(SEC, "num_worker")
        .or_else(|| cx.get(SEC, "num_workers"))
    {
        d.insert("num_workers".into(), v);
    }
    match cx.peek(SEC, "task_type").and_then(Value::as_str) {
        Some("seg") | None => cx.note(SEC, "task_type", Effect::NoEffect, "medseg segments"),
        Some(_) => cx.note(
            SEC,
            "task_type",
            Effect::ChangesResults,
            "medseg's learners segment; other PyMIC tasks are not mapped",
        ),
    }
    cx.note(
        SEC,
        "supervise_type",
        Effect::NoEffect,
        "medseg reads the regime from the method section",
    );
    match cx.peek(SEC, "tensor_type").and_then(Value::as_str) {
        Some("double") => cx.note(
            SEC,
            "tensor_type",
            Effect::Approximated,
            "medseg computes in float32",
        ),
        _ => cx.note(
            SEC,
            "tensor_type",
            Effect::NoEffect,
            "medseg computes in float32",
        ),
    }
    for (k, why) in [
        (
            "valid_batch_size",
            "medseg validates one image at a time, as PyMIC's default",
        ),
        ("test_batch_size", "prediction does not depend on it"),
        ("data_shuffle", "medseg shuffles training data"),
        ("train_dim", "medseg reads the dimension from the images"),
    ] {
        cx.note(SEC, k, Effect::NoEffect, why);
    }
    let patch_size = cx.get(SEC, "patch_size");

    let mut ignore = None;
    let tc = TfContext {
        class_num,
        patch_size: patch_size.clone(),
        channels,
    };
    let mut tr = Translator::new(&tc);
    let train_names = names(cx.get(SEC, "train_transform"));
    let train = tr.list(cx, "train_transform", &train_names);
    if train_names.iter().any(|n| n == "PartialLabelToProbability")
        || method.is_some_and(|m| m.medseg_section == "weak")
    {
        // PyMIC's partial labels mark unannotated pixels with class_num
        ignore = Some(class_num);
    }
    if let Some(unl) = cx.peek(SEC, "train_transform_unlab").cloned() {
        let unl = names(Some(unl));
        if unl == without_label_steps(&train_names) {
            cx.note(
                SEC,
                "train_transform_unlab",
                Effect::NoEffect,
                "the training transforms without their label steps: medseg applies \
                 train_transforms to unlabelled images, where label steps do nothing",
            );
            // parameters are shared; the names are the training ones
            tr.list(cx, "train_transform_unlab", &unl);
        } else {
            cx.note(
                SEC,
                "train_transform_unlab",
                Effect::ChangesResults,
                "medseg applies train_transforms to unlabelled images; a different list is \
                 not mapped",
            );
        }
    }
    let test_names = names(cx.get(SEC, "test_transform"));
    let valid_names = names(cx.get(SEC, "valid_transform"));
    // medseg validates with the test transforms; the valid list's label steps
    // (LabelConvert) are added, since they leave unlabelled images alone
    let mut test_list = if test_names.is_empty() {
        without_label_steps(&valid_names)
    } else {
        test_names.clone()
    };
    for n in &valid_names {
        if n == "LabelConvert" && !test_list.contains(n) {
            test_list.push(n.clone());
        }
    }
    let image_steps = |v: &[String]| without_label_steps(v);
    if !valid_names.is_empty() && image_steps(&valid_names) != image_steps(&test_list) {
        cx.note_free(
            "dataset.valid_transform",
            &format!("{valid_names:?}"),
            Effect::Approximated,
            "medseg validates with the test transforms; PyMIC's validation list differs in \
             image steps (this changes only which checkpoint is `best`)",
        );
    }
    let test = tr.list(cx, "test_transform", &test_list);
    let _ = tr.list(cx, "valid_transform", &valid_names);
    if cx.has_section(SEC) && cx.peek(SEC, "transform").is_some() {
        cx.note(
            SEC,
            "transform",
            Effect::ChangesResults,
            "the transform list of PyMIC's self-supervised pre-processing is not mapped",
        );
    }
    tr.finish(cx);
    if let Some(i) = ignore {
        d.insert("ignore_label".into(), json!(i));
    }
    if !train.is_empty() {
        d.insert("train_transforms".into(), Value::Array(train));
    }
    if !test.is_empty() {
        d.insert("test_transforms".into(), Value::Array(test));
    }
    Ok((d, patch_size))
}
