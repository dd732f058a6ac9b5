//! `configs/zoo/`: one file per network of the zoo experiment
//! (`cargo xtask experiment zoo`). Every file must give the same budget (the
//! quickstart's data, augmentation and training, only the output folder
//! differs), name a registered 2D network, and that network must take the
//! recipe's 96x96 crops, give an output the recipe's loss takes (as a
//! training step does), and report its size and multiply-adds.

use candle_core::{DType, Device, Tensor};
use medseg_config::ExperimentConfig;
use medseg_learners::{build_loss, build_net, network_config, supervised_loss};
use medseg_losses::LossTarget;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn zoo_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("configs/zoo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn load(p: &Path) -> ExperimentConfig {
    ExperimentConfig::load(p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_zoo_config_has_the_quickstart_budget() {
    let quick = load(&root().join("configs/supervised/quickstart.toml"));
    let files = zoo_files();
    assert!(files.len() >= 17, "{} zoo configs", files.len());
    let mut names = Vec::new();
    for f in &files {
        let mut c = load(f);
        // a network that needs larger inputs pads the crops (CE-Net)
        c.dataset.train_transforms.retain(|t| t["name"] != "Pad");
        assert_eq!(c.dataset, quick.dataset, "{}: [dataset]", f.display());
        let mut t = c.training.clone();
        let stem = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(
            t.output_dir,
            PathBuf::from(format!("runs/zoo/{stem}")),
            "{}",
            f.display()
        );
        t.output_dir = quick.training.output_dir.clone();
        assert_eq!(t, quick.training, "{}: [training]", f.display());
        let name = c.network["name"].as_str().unwrap().to_string();
        assert!(!names.contains(&name), "{name} twice in configs/zoo");
        names.push(name);
    }
}

#[test]
fn every_zoo_network_takes_the_crops_and_reports_its_size() {
    for f in zoo_files() {
        let c = load(&f);
        let net_cfg = network_config(&c);
        let (vm, net) =
            build_net(&net_cfg, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(net.dimension(), 2, "{}", f.display());
        // the crops, padded where the recipe pads them
        let side = c
            .dataset
            .train_transforms
            .iter()
            .find(|t| t["name"] == "Pad")
            .map_or(96, |t| t["size"][0].as_u64().unwrap() as usize);
        let x = Tensor::zeros((1, 1, side, side), DType::F32, &Device::Cpu).unwrap();
        let y = net
            .forward_t(&x, false)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(y.logits.dims(), &[1, 4, side, side], "{}", f.display());
        // the recipe's loss takes the output, as in a training step
        let loss = build_loss(&c.training.loss).unwrap();
        let labels = Tensor::zeros((1, 1, side, side), DType::U32, &Device::Cpu).unwrap();
        let l = supervised_loss(loss.as_ref(), &y, &LossTarget::class_map(labels))
            .unwrap_or_else(|e| panic!("{}: the loss refuses the output: {e}", f.display()))
            .to_scalar::<f32>()
            .unwrap();
        assert!(l.is_finite() && l > 0.0, "{}: loss {l}", f.display());
        let s = medseg_nets::summarize(net.as_ref(), &[1, 1, side, side], &Device::Cpu).unwrap();
        let trainable: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert!(s.total_params <= trainable, "{}", f.display());
        assert_eq!(s.total_params, net.num_parameters(), "{}", f.display());
        // at least one 3x3 convolution (or a 16x16 patch projection) per output pixel
        assert!(
            s.total_macs >= 96 * 96 * 9,
            "{}: {} multiply-adds",
            f.display(),
            s.total_macs
        );
    }
}
