use medseg_viz::*;
use ndarray::{s, Array2};
use std::path::Path;

fn decode(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, buf)
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("medseg_viz_test_{}_{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn grey_window_maps_ends_and_clamps() {
    let a = Array2::from_shape_vec((1, 5), vec![-10.0, 0.0, 5.0, 10.0, 20.0]).unwrap();
    let img = grey_to_rgb(a.view(), Some((0.0, 10.0)));
    assert_eq!((img.width, img.height), (5, 1));
    let g: Vec<u8> = (0..5).map(|x| img.get(x, 0).unwrap()[0]).collect();
    assert_eq!(g, vec![0, 0, 128, 255, 255]);
    // grey means R == G == B
    assert!(img.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn default_window_is_1st_to_99th_percentile() {
    // 0..=100: numpy percentile(1) = 1.0, percentile(99) = 99.0
    let a = Array2::from_shape_fn((1, 101), |(_, x)| x as f32);
    assert_eq!(default_window(a.view()), (1.0, 99.0));
    let img = grey_to_rgb(a.view(), None);
    assert_eq!(img.get(0, 0).unwrap(), [0, 0, 0]);
    assert_eq!(img.get(1, 0).unwrap(), [0, 0, 0]);
    assert_eq!(img.get(99, 0).unwrap(), [255, 255, 255]);
    assert_eq!(img.get(50, 0).unwrap()[0], 128); // (50-1)/98*255 = 127.5 -> 128
                                                 // non-finite values are black and ignored by the window
    let mut b = a.clone();
    b[[0, 3]] = f32::NAN;
    let img = grey_to_rgb(b.view(), None);
    assert_eq!(img.get(3, 0).unwrap(), [0, 0, 0]);
}

#[test]
fn overlay_colours_at_known_positions() {
    let mut image = Array2::<f32>::zeros((10, 10));
    image.slice_mut(s![.., 5..]).fill(100.0);
    let mut labels = Array2::<u16>::zeros((10, 10));
    labels[[1, 1]] = 1; // on black
    labels[[1, 7]] = 3; // on white
    labels[[2, 7]] = 255; // ignored
    labels[[3, 2]] = 2;
    let img = overlay_labels(image.view(), labels.view(), 1.0, Some(255));
    assert_eq!(img.get(1, 1).unwrap(), class_colour(1));
    assert_eq!(img.get(7, 1).unwrap(), class_colour(3));
    assert_eq!(img.get(2, 3).unwrap(), class_colour(2));
    assert_eq!(img.get(7, 2).unwrap(), [255, 255, 255]);
    assert_eq!(img.get(0, 0).unwrap(), [0, 0, 0]);
    assert_eq!(img.get(9, 9).unwrap(), [255, 255, 255]);
    // half transparency blends with the grey level
    let img = overlay_labels(image.view(), labels.view(), 0.5, Some(255));
    let c = class_colour(3);
    let want: Vec<u8> = c
        .iter()
        .map(|&v| (0.5 * 255.0 + 0.5 * v as f32).round() as u8)
        .collect();
    assert_eq!(img.get(7, 1).unwrap().to_vec(), want);
    // distinct colours for the first classes
    assert_ne!(class_colour(1), class_colour(2));
    assert_ne!(class_colour(2), class_colour(3));
}

#[test]
fn montage_geometry_and_placement() {
    let a = RgbImage::filled(4, 3, [255, 0, 0]);
    let b = RgbImage::filled(2, 5, [0, 255, 0]);
    let c = RgbImage::filled(4, 5, [0, 0, 255]);
    let m = montage(&[a, b, c], 2, 2);
    // cell 4 x 5, 2 columns, 2 rows
    assert_eq!(m.width, 2 * 4 + 3 * 2);
    assert_eq!(m.height, 2 * 5 + 3 * 2);
    assert_eq!(m.pixels.len(), m.width * m.height * 3);
    assert_eq!(m.get(0, 0).unwrap(), MONTAGE_BACKGROUND);
    assert_eq!(m.get(2, 2).unwrap(), [255, 0, 0]);
    assert_eq!(m.get(5, 4).unwrap(), [255, 0, 0]);
    assert_eq!(m.get(2, 5).unwrap(), MONTAGE_BACKGROUND); // below the 3-row tile a
    assert_eq!(m.get(8, 2).unwrap(), [0, 255, 0]);
    assert_eq!(m.get(10, 2).unwrap(), MONTAGE_BACKGROUND); // right of 2-wide tile b
    assert_eq!(m.get(2, 9).unwrap(), [0, 0, 255]);
    assert_eq!(m.get(8, 9).unwrap(), MONTAGE_BACKGROUND); // empty fourth cell
    let e = montage(&[], 3, 0);
    assert_eq!((e.width, e.height), (1, 1));
}

#[test]
fn png_round_trip_and_errors() {
    let d = tmpdir("png");
    let mut img = RgbImage::filled(7, 3, [10, 20, 30]);
    img.put(6, 2, [1, 2, 3]);
    let p = d.join("a.png");
    save_png(&p, &img).unwrap();
    let (w, h, ct, buf) = decode(&p);
    assert_eq!((w, h, ct), (7, 3, png::ColorType::Rgb));
    assert_eq!(buf, img.pixels);
    // no temporary file is left behind
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1);
    let bad = RgbImage {
        width: 2,
        height: 2,
        pixels: vec![0; 5],
    };
    assert!(save_png(&d.join("b.png"), &bad).is_err());
    assert!(save_png(&d.join("no/such/dir/c.png"), &img).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Counts pixels that are neither white nor near-white.
fn ink(buf: &[u8]) -> usize {
    buf.chunks(3).filter(|p| p.iter().any(|&v| v < 200)).count()
}

/// Counts pixels close to colour `c`.
fn count_colour(buf: &[u8], c: [u8; 3]) -> usize {
    buf.chunks(3)
        .filter(|p| (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() <= 2))
        .count()
}

#[test]
fn line_chart_draws_series_in_their_colours() {
    let d = tmpdir("line");
    let p = d.join("loss.png");
    let s = vec![
        Series {
            name: "train".into(),
            points: (0..50)
                .map(|i| (i as f64, (-0.05 * i as f64).exp()))
                .collect(),
        },
        Series {
            name: "valid".into(),
            points: vec![(0.0, 0.9), (10.0, f64::NAN), (20.0, 0.5), (49.0, 0.3)],
        },
    ];
    line_chart(&p, "Loss", "epoch", "loss", &s).unwrap();
    let (w, h, _, buf) = decode(&p);
    assert_eq!((w as usize, h as usize), (CHART_WIDTH, CHART_HEIGHT));
    let c0 = class_colour(1);
    let c1 = class_colour(2);
    assert!(count_colour(&buf, c0) > 200, "first series colour missing");
    assert!(count_colour(&buf, c1) > 100, "second series colour missing");
    // an empty chart still draws axes and text but no series colour
    let q = d.join("empty.png");
    line_chart(&q, "Empty", "x", "y", &[]).unwrap();
    let (_, _, _, empty) = decode(&q);
    assert!(ink(&empty) > 500, "axes and text expected");
    assert_eq!(count_colour(&empty, c0), 0);
    assert!(ink(&buf) > ink(&empty));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn text_is_rendered_with_the_embedded_font() {
    let d = tmpdir("text");
    let a = d.join("a.png");
    let b = d.join("b.png");
    line_chart(&a, "", "", "", &[]).unwrap();
    line_chart(&b, "A long title with many glyphs", "epoch", "loss", &[]).unwrap();
    let (_, _, _, pa) = decode(&a);
    let (_, _, _, pb) = decode(&b);
    assert!(
        ink(&pb) > ink(&pa) + 300,
        "title and axis labels should add ink"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn box_stats_match_numpy_percentiles() {
    // numpy: np.percentile([1,2,3,4,100], [25,50,75]) = [2, 3, 4]
    let s = box_stats(&[4.0, 1.0, f64::NAN, 3.0, 100.0, 2.0, f64::INFINITY]).unwrap();
    assert_eq!((s.q1, s.median, s.q3), (2.0, 3.0, 4.0));
    assert_eq!((s.whisker_lo, s.whisker_hi), (1.0, 4.0)); // 100 is an outlier
                                                          // np.percentile([1,2,3,4], 25) = 1.75
    let s = box_stats(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!((s.q1 - 1.75).abs() < 1e-12 && (s.median - 2.5).abs() < 1e-12);
    assert!(box_stats(&[f64::NAN]).is_none());
}

#[test]
fn box_plot_and_bar_chart_draw() {
    let d = tmpdir("box");
    let p = d.join("box.png");
    let groups = vec![
        (
            "UNet".to_string(),
            vec![0.8, 0.82, 0.85, 0.9, f64::NAN, 0.5],
        ),
        ("UNet 10%".to_string(), vec![0.6, 0.7, 0.65, 0.72]),
        ("empty".to_string(), vec![f64::NAN]),
    ];
    box_plot(&p, "Dice", "Dice", &groups).unwrap();
    let (w, h, _, buf) = decode(&p);
    assert_eq!((w as usize, h as usize), (CHART_WIDTH, CHART_HEIGHT));
    assert!(ink(&buf) > 2000);

    let q = d.join("bar.png");
    let cats = vec!["RV".to_string(), "Myo".to_string(), "LV".to_string()];
    let series = vec![
        (
            "full".to_string(),
            vec![0.8, 0.75, 0.9],
            Some(vec![0.05, 0.04, 0.02]),
        ),
        ("10%".to_string(), vec![0.6, f64::NAN, 0.8], None),
    ];
    bar_chart(&q, "Dice per class", "Dice", &cats, &series).unwrap();
    let (w, h, _, buf) = decode(&q);
    assert_eq!((w as usize, h as usize), (CHART_WIDTH, CHART_HEIGHT));
    // bars are filled in the series colours
    assert!(count_colour(&buf, class_colour(1)) > 3000);
    assert!(count_colour(&buf, class_colour(2)) > 2000);
    let bad = vec![("x".to_string(), vec![1.0], None)];
    assert!(bar_chart(&q, "t", "y", &cats, &bad).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Mean (column, row) of the pixels of colour `c`.
fn centroid(buf: &[u8], w: usize, c: [u8; 3]) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (i, p) in buf.chunks(3).enumerate() {
        if (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() <= 2) {
            sx += (i % w) as f64;
            sy += (i / w) as f64;
            n += 1.0;
        }
    }
    assert!(n > 0.0, "colour {c:?} not drawn");
    (sx / n, sy / n)
}

#[test]
fn scatter_chart_places_points_on_a_log_axis() {
    let d = tmpdir("scatter");
    let p = d.join("scatter.png");
    let pt = |label: &str, x: f64, y: f64| LabelledPoint {
        label: label.into(),
        x,
        y,
        error: Some(0.01),
    };
    // 10K, 1M and 100K parameters: on a log axis the middle one is halfway
    let pts = vec![
        pt("small", 1e4, 0.9),
        pt("large", 1e6, 0.5),
        pt("mid", 1e5, 0.7),
        pt("hidden", f64::NAN, 0.1),
    ];
    scatter_chart(&p, "Dice against size", "parameters", "Dice", &pts, true).unwrap();
    let (w, h, _, buf) = decode(&p);
    assert_eq!((w as usize, h as usize), (CHART_WIDTH, CHART_HEIGHT));
    let a = centroid(&buf, w as usize, class_colour(1));
    let b = centroid(&buf, w as usize, class_colour(2));
    let c = centroid(&buf, w as usize, class_colour(3));
    assert!(a.0 < c.0 && c.0 < b.0, "{a:?} {b:?} {c:?}");
    assert!((c.0 - (a.0 + b.0) / 2.0).abs() < 4.0, "{a:?} {b:?} {c:?}");
    // higher Dice is drawn higher up (smaller row), linearly
    assert!(a.1 < c.1 && c.1 < b.1);
    assert!((c.1 - (a.1 + b.1) / 2.0).abs() < 4.0, "{a:?} {b:?} {c:?}");
    // a point at zero cannot go on a log axis: an error naming it
    let bad = vec![pt("zero", 0.0, 0.5)];
    let e = scatter_chart(&p, "t", "x", "y", &bad, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("zero") && e.contains("logarithmic"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
