//! PNG plots for reports: line charts and heat maps.
//!
//! Text is rendered with a bundled font (DejaVu Sans, see `assets/DejaVuSans-LICENSE.txt`), so
//! plots look the same on every machine and need no system font library.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn ensure_font() {
    REGISTER.call_once(|| {
        // The bundled font is a valid TrueType file; registration can only fail if it were not.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series called `name`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
        }
    }
}

/// Options of a line chart.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// Draw the x axis on a log10 scale (all x must be positive).
    pub log_x: bool,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn bounds(series: &[Series], log_x: bool) -> Option<(f64, f64, f64, f64)> {
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    let mut any = false;
    for &(x, y) in pts {
        let x = if log_x { x.log10() } else { x };
        any = true;
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !any {
        return None;
    }
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    Some((x0, x1, y0 - pad, y1 + pad))
}

/// Draws into a temporary PNG next to `path` and renames it into place, so a crash or a full
/// disk never leaves a half-written plot under the final name (a reader sees the old plot or
/// the new one). The temporary name keeps the `.png` extension, which selects the encoder.
fn write_png_atomic(path: &Path, draw: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    crate::checkpoint::write_atomic_with(path, draw)
}

/// Draws `series` as lines with markers into a PNG file of 900x560 pixels (written atomically).
pub fn line_chart(path: &Path, opts: &LineChart<'_>, series: &[Series]) -> Result<()> {
    write_png_atomic(path, |tmp| draw_line_chart(tmp, opts, series))
}

fn draw_line_chart(path: &Path, opts: &LineChart<'_>, series: &[Series]) -> Result<()> {
    ensure_font();
    let (x0, x1, y0, y1) = bounds(series, opts.log_x).context("nothing to plot")?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(opts.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let log_x = opts.log_x;
    let fmt_x = move |v: &f64| {
        if log_x {
            // Ticks fall between powers of ten: label the value itself, not a rounded exponent.
            let x = 10f64.powf(*v);
            if x >= 10.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string()
            }
        } else if v.abs() >= 1000.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
    };
    chart
        .configure_mesh()
        .x_desc(opts.x_label)
        .y_desc(opts.y_label)
        .x_label_formatter(&fmt_x)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
            .map(|&(x, y)| (if log_x { x.log10() } else { x }, y))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Draws a labelled heat map of `values` (rows x columns) with each cell's value printed
/// (written atomically).
pub fn heat_map(
    path: &Path,
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    write_png_atomic(path, |tmp| {
        draw_heat_map(tmp, title, row_labels, col_labels, values)
    })
}

fn draw_heat_map(
    path: &Path,
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
) -> Result<()> {
    ensure_font();
    let rows = values.len();
    let cols = values.first().map_or(0, Vec::len);
    anyhow::ensure!(rows > 0 && cols > 0, "empty heat map");
    anyhow::ensure!(
        values.iter().all(|r| r.len() == cols),
        "heat map rows have different lengths"
    );
    let finite = values.iter().flatten().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::MAX, |a, &b| a.min(b));
    let hi = finite.fold(f64::MIN, |a, &b| a.max(b));
    let span = (hi - lo).max(1e-12);
    let cell = 70u32;
    let (w, h) = (140 + cell * cols as u32 + 20, 70 + cell * rows as u32 + 60);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        title.to_string(),
        (12, 12),
        ("sans-serif", 20).into_font(),
    ))?;
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let t = if v.is_finite() { (v - lo) / span } else { 0.0 };
            // White (low) to dark blue (high).
            let color = RGBColor(
                (255.0 - 225.0 * t) as u8,
                (255.0 - 170.0 * t) as u8,
                (255.0 - 75.0 * t) as u8,
            );
            let x = 140 + cell as i32 * c as i32;
            let y = 60 + cell as i32 * r as i32;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell as i32 - 2, y + cell as i32 - 2)],
                color.filled(),
            ))?;
            let text_color = if t > 0.6 { WHITE } else { BLACK };
            root.draw(&Text::new(
                format!("{v:.2}"),
                (x + 14, y + cell as i32 / 2 - 8),
                ("sans-serif", 16).into_font().color(&text_color),
            ))?;
        }
        if let Some(l) = row_labels.get(r) {
            root.draw(&Text::new(
                l.clone(),
                (10, 60 + cell as i32 * r as i32 + cell as i32 / 2 - 8),
                ("sans-serif", 15).into_font(),
            ))?;
        }
    }
    for (c, l) in col_labels.iter().enumerate().take(cols) {
        root.draw(&Text::new(
            l.clone(),
            (
                140 + cell as i32 * c as i32 + 6,
                60 + cell as i32 * rows as i32 + 10,
            ),
            ("sans-serif", 15).into_font(),
        ))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render_to_png_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("line.png");
        line_chart(
            &p,
            &LineChart {
                title: "loss",
                x_label: "epoch",
                y_label: "value",
                log_x: false,
            },
            &[
                Series::new("train", vec![(1.0, 0.7), (2.0, 0.5), (3.0, 0.45)]),
                Series::new("valid", vec![(1.0, 0.72), (2.0, 0.6), (3.0, 0.61)]),
            ],
        )
        .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let h = dir.path().join("heat.png");
        heat_map(
            &h,
            "affinity",
            &["a".into(), "b".into()],
            &["a".into(), "b".into()],
            &[vec![1.0, 0.2], vec![0.2, 1.0]],
        )
        .unwrap();
        assert_eq!(&std::fs::read(&h).unwrap()[1..4], b"PNG");
        assert!(
            line_chart(
                &p,
                &LineChart {
                    title: "",
                    x_label: "",
                    y_label: "",
                    log_x: true
                },
                &[Series::new("x", vec![(-1.0, 1.0)])]
            )
            .is_err()
        );
        // A drawing that fails after writing part of its file leaves the earlier plot in
        // place and no temporary file behind.
        let failed = write_png_atomic(&p, |tmp| {
            std::fs::write(tmp, b"\x89PNG partial").unwrap();
            anyhow::bail!("the drawing failed half-way")
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["heat.png", "line.png"]);
    }
}
