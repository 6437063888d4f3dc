//! Laying out and drawing a figure: a title and caption, a grid of panels (bars with whiskers, or
//! lines over K) and a legend, onto plotters' SVG backend.
//!
//! The layout is ours rather than plotters' `ChartBuilder`, because what these plots need most is
//! not in it: a backend's name under every bar, the rig's rows set apart on the same axis, whiskers
//! on every bar and point, and tick labels that read well on log axes.

use plotters::backend::SVGBackend;
use plotters::coord::Shift;
use plotters::drawing::{DrawingArea, IntoDrawingArea};
use plotters::element::{Circle, PathElement, Rectangle};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, FontStyle, FontTransform, IntoFont, RGBColor, ShapeStyle, WHITE};

use super::scale::{self, Choice, Scale};
use super::style::{GRID, INK, MUTED, RIG_BAND, Series};
use crate::stats::Stats;

/// Width of every figure, in pixels.
const WIDTH: f64 = 800.0;
/// Height of a row of panels when the figure has one row, and when it has more.
const ROW_ONE: f64 = 340.0;
const ROW_MANY: f64 = 265.0;
/// Space for the title and caption.
const HEADER: f64 = 58.0;
/// Outer margin left and right.
const MARGIN: f64 = 14.0;
/// Space left of a panel's plot area, for tick labels and the axis name.
const AXIS_LEFT: f64 = 62.0;
/// Height of a legend row.
const LEGEND_ROW: f64 = 20.0;

/// What one plot file shows.
pub(super) struct Figure {
    /// The figure's title.
    pub title: String,
    /// The line under it: what the marks mean, n, which way is better.
    pub caption: String,
    /// Its panels, laid out left to right, then top to bottom.
    pub panels: Vec<Panel>,
}

/// One panel of a figure.
pub(super) enum Panel {
    /// A bar per series.
    Bars(BarPanel),
    /// A line per series over a numeric x.
    Lines(LinePanel),
}

/// Bars: the median of each series, whiskers from p10 to p90.
pub(super) struct BarPanel {
    /// What the panel shows.
    pub title: String,
    /// The metric id, shown small under the title.
    pub id: String,
    /// The value axis's name (with its unit).
    pub y_label: String,
    /// How the value axis is scaled.
    pub scale: Choice,
    /// The bars, in series order.
    pub bars: Vec<Bar>,
}

/// One bar.
pub(super) struct Bar {
    /// Whose it is.
    pub series: Series,
    /// Its numbers.
    pub stats: Stats,
}

/// Lines: one per series through its medians, whiskers at every point.
pub(super) struct LinePanel {
    /// What the panel shows.
    pub title: String,
    /// The x axis's name.
    pub x_label: String,
    /// The value axis's name (with its unit).
    pub y_label: String,
    /// How the value axis is scaled.
    pub scale: Choice,
    /// The lines, in series order; their points in x order.
    pub lines: Vec<Line>,
}

/// One line.
pub(super) struct Line {
    /// Whose it is.
    pub series: Series,
    /// (x, numbers at x).
    pub points: Vec<(f64, Stats)>,
}

impl Panel {
    fn series(&self) -> Vec<&Series> {
        match self {
            Panel::Bars(p) => p.bars.iter().map(|b| &b.series).collect(),
            Panel::Lines(p) => p.lines.iter().map(|l| &l.series).collect(),
        }
    }
}

/// What went wrong drawing (plotters' error, as text).
pub(super) type Drawn = std::result::Result<(), String>;

/// Draws `figure` and returns the SVG document.
pub(super) fn render(figure: &Figure) -> std::result::Result<String, String> {
    let mut series: Vec<Series> = figure
        .panels
        .iter()
        .flat_map(Panel::series)
        .cloned()
        .collect();
    series.sort();
    series.dedup();
    let lines = figure.panels.iter().any(|p| matches!(p, Panel::Lines(_)));
    let rig = series.iter().any(Series::rig);
    let auto = auto_choice(&figure.panels);

    let columns = match figure.panels.len() {
        0..=3 => figure.panels.len().max(1),
        4 => 2,
        _ => 3,
    };
    let rows = figure.panels.len().div_ceil(columns).max(1);
    let row_h = if rows == 1 { ROW_ONE } else { ROW_MANY };
    let legend = legend_layout(&series);
    let legend_rows = legend.last().map_or(0, |i| i.row + 1) as f64;
    let note = if rig { rig_note(lines) } else { Vec::new() };
    let footer = 10.0 + legend_rows * LEGEND_ROW + note.len() as f64 * NOTE_LINE + 4.0;
    let height = HEADER + rows as f64 * row_h + footer;
    let widths = panel_widths(&figure.panels, columns);

    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDTH as u32, height.round() as u32))
            .into_drawing_area();
        let c = Canvas { area };
        c.area.fill(&WHITE).map_err(|e| e.to_string())?;
        let px = fit_px(&figure.title, 18.0, WIDTH - 2.0 * MARGIN);
        c.text(
            &figure.title,
            (MARGIN, 10.0),
            px,
            Weight::Bold,
            INK,
            LEFT_TOP,
        )?;
        c.text(
            &figure.caption,
            (MARGIN, 36.0),
            12.0,
            Weight::Normal,
            MUTED,
            LEFT_TOP,
        )?;

        for (i, panel) in figure.panels.iter().enumerate() {
            let (col, row) = (i % columns, i / columns);
            let x0 = MARGIN + widths[..col].iter().sum::<f64>();
            let y0 = HEADER + row as f64 * row_h;
            let rect = Rect {
                l: x0,
                t: y0,
                r: x0 + widths[col],
                b: y0 + row_h,
            };
            match panel {
                Panel::Bars(p) => bar_panel(&c, p, auto, rect)?,
                Panel::Lines(p) => line_panel(&c, p, auto, rect)?,
            }
        }

        let legend_top = HEADER + rows as f64 * row_h + 10.0;
        for item in &legend {
            let x = MARGIN + item.x;
            let y = legend_top + item.row as f64 * LEGEND_ROW + 7.0;
            if lines {
                line_swatch(&c, &item.series, x, y)?;
            } else {
                bar_swatch(&c, &item.series, x, y)?;
            }
            let label = item.series.label();
            let at = (x + SWATCH + 6.0, y);
            c.text(&label, at, 11.0, Weight::Normal, INK, LEFT_MIDDLE)?;
        }
        let note_top = legend_top + legend_rows * LEGEND_ROW + 4.0;
        for (i, line) in note.iter().enumerate() {
            let at = (MARGIN, note_top + i as f64 * NOTE_LINE);
            c.text(line, at, 11.0, Weight::Italic, MUTED, LEFT_TOP)?;
        }
        c.area.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Height of a line of the rig note.
const NOTE_LINE: f64 = 15.0;

/// The note under the legend that says what rig rows are, wrapped to the figure's width.
fn rig_note(lines: bool) -> Vec<String> {
    let how = if lines {
        "Dashed lines with hollow points"
    } else {
        "Lighter, hatched bars"
    };
    let note = format!(
        "{how} marked \"(rig)\" were measured inside the nested-virtualisation rig, much slower \
         than the host: compare them only with each other."
    );
    wrap(&note, 11.0, WIDTH - 2.0 * MARGIN)
}

/// `text` broken at spaces into lines that fit `width` at `px`.
fn wrap(text: &str, px: f64, width: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_width(&candidate, px) > width {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// What [`Choice::Auto`] means for this figure: log for every panel when any panel's values span
/// more than [`scale::AUTO_LOG_RATIO`] and all are positive, so that a figure's panels read alike.
fn auto_choice(panels: &[Panel]) -> Choice {
    let extents: Vec<(f64, f64)> = panels
        .iter()
        .filter_map(|p| match p {
            Panel::Bars(p) => extent(p.bars.iter().map(|b| &b.stats)),
            Panel::Lines(p) => extent(p.lines.iter().flat_map(|l| l.points.iter().map(|x| &x.1))),
        })
        .collect();
    let positive = extents.iter().all(|(lo, _)| *lo > 0.0);
    let wide = extents
        .iter()
        .any(|(lo, hi)| *hi / *lo > scale::AUTO_LOG_RATIO);
    if positive && wide {
        Choice::Log
    } else {
        Choice::Linear
    }
}

/// The width of each column of panels: in a single row, in proportion to how many bars each
/// panel holds (within limits), so that crowded panels get the room; otherwise equal.
fn panel_widths(panels: &[Panel], columns: usize) -> Vec<f64> {
    let total = WIDTH - 2.0 * MARGIN;
    if panels.len() != columns {
        return vec![total / columns as f64; columns];
    }
    let weights: Vec<f64> = panels
        .iter()
        .map(|p| match p {
            Panel::Bars(p) => {
                let rigs = p.bars.iter().filter(|b| b.series.rig()).count();
                let mixed = rigs > 0 && rigs < p.bars.len();
                let slots = p.bars.len() as f64 + if mixed { 0.5 } else { 0.0 };
                (AXIS_LEFT + 10.0 + slots * 44.0).max(230.0)
            }
            Panel::Lines(_) => 600.0,
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| total * w / sum).collect()
}

/// Width of a legend swatch.
const SWATCH: f64 = 18.0;

/// Where a legend entry goes: its row and its x from the left margin.
struct LegendItem {
    series: Series,
    row: usize,
    x: f64,
}

/// Lays the legend out in rows that fit the figure's width.
fn legend_layout(series: &[Series]) -> Vec<LegendItem> {
    let mut items = Vec::new();
    let (mut row, mut x) = (0, 0.0);
    for s in series {
        let w = SWATCH + 6.0 + text_width(&s.label(), 11.0) + 18.0;
        if x > 0.0 && x + w > WIDTH - 2.0 * MARGIN {
            row += 1;
            x = 0.0;
        }
        items.push(LegendItem {
            series: s.clone(),
            row,
            x,
        });
        x += w;
    }
    items
}

fn bar_swatch(c: &Canvas, s: &Series, x: f64, y: f64) -> Drawn {
    let r = Rect {
        l: x,
        t: y - 6.0,
        r: x + SWATCH,
        b: y + 6.0,
    };
    bar_shape(c, s, r)
}

fn line_swatch(c: &Canvas, s: &Series, x: f64, y: f64) -> Drawn {
    series_line(c, s, &[(x, y), (x + SWATCH, y)])?;
    marker(c, s, (x + SWATCH / 2.0, y))
}

/// A rectangle in pixels: left, top, right, bottom.
#[derive(Clone, Copy, Debug)]
struct Rect {
    l: f64,
    t: f64,
    r: f64,
    b: f64,
}

impl Rect {
    fn width(&self) -> f64 {
        self.r - self.l
    }
}

/// Font weight or slant.
#[derive(Clone, Copy)]
enum Weight {
    Normal,
    Bold,
    Italic,
}

const LEFT_TOP: (HPos, VPos) = (HPos::Left, VPos::Top);
const LEFT_MIDDLE: (HPos, VPos) = (HPos::Left, VPos::Center);
const CENTRE_TOP: (HPos, VPos) = (HPos::Center, VPos::Top);
const CENTRE_BOTTOM: (HPos, VPos) = (HPos::Center, VPos::Bottom);
const CENTRE_MIDDLE: (HPos, VPos) = (HPos::Center, VPos::Center);
const RIGHT_MIDDLE: (HPos, VPos) = (HPos::Right, VPos::Center);

/// About how wide `s` is at `px` pixels (the SVG viewer picks the font, so this is an estimate
/// on the wide side, from DejaVu Sans).
fn text_width(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.6
}

/// The largest size up to `px` (down to 8) at which `s` fits in `width`.
fn fit_px(s: &str, px: f64, width: f64) -> f64 {
    let mut px = px;
    while px > 8.0 && text_width(s, px) > width {
        px -= 0.5;
    }
    px
}

/// The drawing area and the few shapes the figures are made of, in pixel coordinates.
struct Canvas<'a> {
    area: DrawingArea<SVGBackend<'a>, Shift>,
}

fn pt((x, y): (f64, f64)) -> (i32, i32) {
    (x.round() as i32, y.round() as i32)
}

impl Canvas<'_> {
    fn fill(&self, r: Rect, colour: RGBColor) -> Drawn {
        let rect = Rectangle::new([pt((r.l, r.t)), pt((r.r, r.b))], colour.filled());
        self.area.draw(&rect).map_err(|e| e.to_string())
    }

    fn path(&self, points: &[(f64, f64)], colour: RGBColor, width: u32) -> Drawn {
        let style = ShapeStyle {
            color: colour.to_rgba(),
            filled: false,
            stroke_width: width,
        };
        let path = PathElement::new(points.iter().copied().map(pt).collect::<Vec<_>>(), style);
        self.area.draw(&path).map_err(|e| e.to_string())
    }

    fn outline(&self, r: Rect, colour: RGBColor) -> Drawn {
        let corners = [(r.l, r.t), (r.r, r.t), (r.r, r.b), (r.l, r.b), (r.l, r.t)];
        self.path(&corners, colour, 1)
    }

    fn circle(&self, at: (f64, f64), radius: f64, colour: RGBColor, filled: bool) -> Drawn {
        let style = ShapeStyle {
            color: colour.to_rgba(),
            filled,
            stroke_width: 2,
        };
        let circle = Circle::new(pt(at), radius.round() as i32, style);
        self.area.draw(&circle).map_err(|e| e.to_string())
    }

    fn text(
        &self,
        s: &str,
        at: (f64, f64),
        px: f64,
        weight: Weight,
        colour: RGBColor,
        pos: (HPos, VPos),
    ) -> Drawn {
        self.text_turned(s, at, px, weight, colour, pos, false)
    }

    /// Text, turned to read bottom to top when `vertical`. plotters' SVG backend writes the size
    /// divided by 1.24, hence the factor.
    #[allow(clippy::too_many_arguments)]
    fn text_turned(
        &self,
        s: &str,
        at: (f64, f64),
        px: f64,
        weight: Weight,
        colour: RGBColor,
        pos: (HPos, VPos),
        vertical: bool,
    ) -> Drawn {
        let slant = match weight {
            Weight::Normal => FontStyle::Normal,
            Weight::Bold => FontStyle::Bold,
            Weight::Italic => FontStyle::Italic,
        };
        let mut style = ("sans-serif", px * 1.24, slant)
            .into_font()
            .color(&colour)
            .pos(Pos::new(pos.0, pos.1));
        if vertical {
            style = style.transform(FontTransform::Rotate270);
        }
        self.area
            .draw_text(s, &style, pt(at))
            .map_err(|e| e.to_string())
    }
}

/// A bar (or swatch) of `s`: its fill, hatching for rig rows, and an outline in its colour.
fn bar_shape(c: &Canvas, s: &Series, r: Rect) -> Drawn {
    c.fill(r, s.fill())?;
    if s.rig() {
        hatch(c, r, s.colour())?;
    }
    c.outline(r, s.colour())
}

/// Diagonal lines across `r`, 6 px apart.
fn hatch(c: &Canvas, r: Rect, colour: RGBColor) -> Drawn {
    let mut k = r.l + r.t + 6.0;
    while k < r.r + r.b {
        // The line x + y = k, clipped to the rectangle.
        let x0 = r.l.max(k - r.b);
        let x1 = r.r.min(k - r.t);
        if x1 - x0 > 1.0 {
            c.path(&[(x0, k - x0), (x1, k - x1)], colour, 1)?;
        }
        k += 6.0;
    }
    Ok(())
}

/// A whisker from `lo` to `hi` at `x`, with caps `cap` px wide each side.
fn whisker(c: &Canvas, x: f64, lo: f64, hi: f64, cap: f64) -> Drawn {
    if (lo - hi).abs() < 1.0 {
        return Ok(());
    }
    c.path(&[(x, lo), (x, hi)], INK, 1)?;
    c.path(&[(x - cap, lo), (x + cap, lo)], INK, 1)?;
    c.path(&[(x - cap, hi), (x + cap, hi)], INK, 1)
}

/// The panel's title (and metric id under it); returns where the plot area may start.
fn panel_title(c: &Canvas, title: &str, id: Option<&str>, r: Rect) -> Result<f64, String> {
    let centre = (r.l + r.r) / 2.0;
    let px = fit_px(title, 13.0, r.width() - 8.0);
    c.text(
        title,
        (centre, r.t + 4.0),
        px,
        Weight::Bold,
        INK,
        CENTRE_TOP,
    )?;
    match id {
        Some(id) => {
            c.text(
                id,
                (centre, r.t + 21.0),
                10.0,
                Weight::Normal,
                MUTED,
                CENTRE_TOP,
            )?;
            Ok(r.t + 40.0)
        }
        None => Ok(r.t + 28.0),
    }
}

/// Grid lines, tick labels and the axis name of a value axis over `plot`.
fn value_axis(c: &Canvas, s: &Scale, label: &str, plot: Rect, panel: Rect) -> Drawn {
    for t in s.ticks() {
        let y = plot.b - s.fraction(t) * (plot.b - plot.t);
        c.path(&[(plot.l, y), (plot.r, y)], GRID, 1)?;
        c.path(&[(plot.l - 4.0, y), (plot.l, y)], MUTED, 1)?;
        let text = scale::format(t);
        c.text(
            &text,
            (plot.l - 6.0, y),
            11.0,
            Weight::Normal,
            MUTED,
            RIGHT_MIDDLE,
        )?;
    }
    let label = if s.is_log() {
        format!("{label} (log scale)")
    } else {
        label.to_string()
    };
    let px = fit_px(&label, 11.0, plot.b - plot.t);
    c.text_turned(
        &label,
        (panel.l + 10.0, (plot.t + plot.b) / 2.0),
        px,
        Weight::Normal,
        MUTED,
        CENTRE_MIDDLE,
        true,
    )
}

/// The smallest and largest value a set of summaries needs on the axis.
fn extent<'a>(stats: impl Iterator<Item = &'a Stats>) -> Option<(f64, f64)> {
    stats
        .flat_map(|s| [s.p10, s.median, s.p90])
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// `choice`, with [`Choice::Auto`] taken to mean the figure's `auto`.
fn resolve(choice: Choice, auto: Choice) -> Choice {
    match choice {
        Choice::Auto => auto,
        c => c,
    }
}

/// Pixels kept free above the highest whisker, for its value label.
const HEADROOM_PX: f64 = 16.0;

fn bar_panel(c: &Canvas, p: &BarPanel, auto: Choice, r: Rect) -> Drawn {
    let Some((min, max)) = extent(p.bars.iter().map(|b| &b.stats)) else {
        return Ok(());
    };
    let rig = p.bars.iter().any(|b| b.series.rig());
    let top = panel_title(c, &p.title, Some(&p.id), r)?;
    let plot = Rect {
        l: r.l + AXIS_LEFT,
        t: top,
        r: r.r - 10.0,
        b: r.b - if rig { 36.0 } else { 24.0 },
    };
    let height = plot.b - plot.t;
    let s = Scale::fit(resolve(p.scale, auto), min, max, HEADROOM_PX / height);
    let y = |v: f64| plot.b - s.fraction(v).clamp(-0.02, 1.02) * height;

    // Host bars first, then a gap, then the rig's bars on a band of their own.
    let hosts = p.bars.iter().filter(|b| !b.series.rig()).count() as f64;
    let rigs = p.bars.len() as f64 - hosts;
    let gap = if hosts > 0.0 && rigs > 0.0 { 0.5 } else { 0.0 };
    let slot = plot.width() / (hosts + gap + rigs);
    let centre = |i: usize, rig: bool| {
        let i = i as f64 + if rig { gap } else { 0.0 };
        plot.l + (i + 0.5) * slot
    };
    if rigs > 0.0 {
        let band = Rect {
            l: plot.l + (hosts + gap / 2.0) * slot,
            ..plot
        };
        c.fill(band, RIG_BAND)?;
    }
    value_axis(c, &s, &p.y_label, plot, r)?;

    let bar_w = (slot * 0.66).min(56.0);
    let cap = (bar_w * 0.22).clamp(2.0, 7.0);
    for (i, b) in p.bars.iter().enumerate() {
        let x = centre(i, b.series.rig());
        let (base, med) = (y(s.baseline()), y(b.stats.median));
        let shape = Rect {
            l: x - bar_w / 2.0,
            t: med.min(base),
            r: x + bar_w / 2.0,
            b: med.max(base),
        };
        bar_shape(c, &b.series, shape)?;
        let (lo, hi) = (y(b.stats.p10), y(b.stats.p90));
        whisker(c, x, lo, hi, cap)?;

        let value = scale::format(b.stats.median);
        if text_width(&value, 10.0) <= slot - 2.0 {
            let above = hi.min(med).min(base) - 3.0;
            c.text(&value, (x, above), 10.0, Weight::Normal, INK, CENTRE_BOTTOM)?;
        }
        let name = &b.series.backend;
        let px = fit_px(name, 11.0, slot - 2.0);
        c.text(name, (x, plot.b + 5.0), px, Weight::Normal, INK, CENTRE_TOP)?;
        if b.series.rig() {
            c.text(
                "(rig)",
                (x, plot.b + 19.0),
                10.0,
                Weight::Italic,
                MUTED,
                CENTRE_TOP,
            )?;
        }
    }
    let zero = y(s.baseline());
    if (zero - plot.b).abs() > 1.0 {
        c.path(&[(plot.l, zero), (plot.r, zero)], MUTED, 1)?;
    }
    c.path(
        &[(plot.l, plot.t), (plot.l, plot.b), (plot.r, plot.b)],
        INK,
        1,
    )
}

fn series_line(c: &Canvas, s: &Series, points: &[(f64, f64)]) -> Drawn {
    if !s.rig() {
        return c.path(points, s.colour(), 2);
    }
    // Dashes: 7 px on, 4 px off, along the whole polyline.
    let (on, off) = (7.0_f64, 4.0_f64);
    let mut dash: Vec<(f64, f64)> = Vec::new();
    let mut pos = 0.0_f64;
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        let mut d = 0.0_f64;
        while d < len {
            let phase = pos % (on + off);
            let step = if phase < on {
                on - phase
            } else {
                on + off - phase
            }
            .min(len - d);
            let at = |t: f64| (x0 + (x1 - x0) * t / len, y0 + (y1 - y0) * t / len);
            if phase < on {
                if dash.is_empty() {
                    dash.push(at(d));
                }
                dash.push(at(d + step));
            } else if !dash.is_empty() {
                c.path(&dash, s.colour(), 2)?;
                dash.clear();
            }
            d += step;
            pos += step;
        }
    }
    if dash.len() > 1 {
        c.path(&dash, s.colour(), 2)?;
    }
    Ok(())
}

/// A point of `s`: filled on the host, hollow in the rig.
fn marker(c: &Canvas, s: &Series, at: (f64, f64)) -> Drawn {
    if s.rig() {
        c.circle(at, 4.0, WHITE, true)?;
        c.circle(at, 4.0, s.colour(), false)
    } else {
        c.circle(at, 4.0, s.colour(), true)
    }
}

fn line_panel(c: &Canvas, p: &LinePanel, auto: Choice, r: Rect) -> Drawn {
    let Some((min, max)) = extent(p.lines.iter().flat_map(|l| l.points.iter().map(|(_, s)| s)))
    else {
        return Ok(());
    };
    let mut xs: Vec<f64> = p
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(x, _)| *x))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let (Some(&x_min), Some(&x_max)) = (xs.first(), xs.last()) else {
        return Ok(());
    };

    let top = panel_title(c, &p.title, None, r)?;
    let plot = Rect {
        l: r.l + AXIS_LEFT,
        t: top,
        r: r.r - 16.0,
        b: r.b - 40.0,
    };
    let height = plot.b - plot.t;
    let s = Scale::fit(resolve(p.scale, auto), min, max, HEADROOM_PX / height);
    let pad = if x_max > x_min {
        (x_max - x_min) * 0.06
    } else {
        1.0
    };
    let xs_scale = Scale::span(x_min - pad, x_max + pad);
    let x = |v: f64| plot.l + xs_scale.fraction(v) * plot.width();
    let y = |v: f64| plot.b - s.fraction(v).clamp(-0.02, 1.02) * height;

    value_axis(c, &s, &p.y_label, plot, r)?;
    let ticks = if xs.len() <= 10 {
        xs.clone()
    } else {
        xs_scale.ticks()
    };
    for t in ticks {
        let px = x(t);
        c.path(&[(px, plot.b), (px, plot.b + 4.0)], MUTED, 1)?;
        let label = scale::format(t);
        c.text(
            &label,
            (px, plot.b + 6.0),
            11.0,
            Weight::Normal,
            MUTED,
            CENTRE_TOP,
        )?;
    }
    let centre = (plot.l + plot.r) / 2.0;
    c.text(
        &p.x_label,
        (centre, r.b - 6.0),
        11.0,
        Weight::Normal,
        MUTED,
        CENTRE_BOTTOM,
    )?;

    // Lines a little apart sideways, so that whiskers at the same x do not hide each other.
    let n = p.lines.len() as f64;
    for (i, l) in p.lines.iter().enumerate() {
        let dx = (i as f64 - (n - 1.0) / 2.0) * 3.0;
        let points: Vec<(f64, f64)> = l
            .points
            .iter()
            .map(|(k, st)| (x(*k) + dx, y(st.median)))
            .collect();
        series_line(c, &l.series, &points)?;
        for ((k, st), at) in l.points.iter().zip(&points) {
            whisker(c, x(*k) + dx, y(st.p10), y(st.p90), 4.0)?;
            marker(c, &l.series, *at)?;
        }
    }
    c.path(
        &[(plot.l, plot.t), (plot.l, plot.b), (plot.r, plot.b)],
        INK,
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Place;

    fn stats(median: f64) -> Stats {
        Stats {
            median,
            p10: median * 0.9,
            p90: median * 1.1,
            min: median * 0.8,
            max: median * 1.2,
            n: 5,
        }
    }

    #[test]
    fn notes_wrap_at_spaces_within_the_width() {
        let text = "one two three four five six seven eight nine ten";
        let lines = wrap(text, 10.0, 100.0);
        assert!(lines.len() > 1);
        assert!(
            lines.iter().all(|l| text_width(l, 10.0) <= 100.0),
            "{lines:?}"
        );
        assert_eq!(lines.join(" "), text);
        assert!(rig_note(false).iter().all(|l| text_width(l, 11.0) <= WIDTH));
    }

    #[test]
    fn legend_wraps_to_the_width() {
        let many: Vec<Series> = (0..20)
            .map(|i| Series::new(&format!("backend-{i}"), Place::Host))
            .collect();
        let items = legend_layout(&many);
        assert!(items.iter().any(|i| i.row > 0));
        assert!(items.iter().all(|i| i.x < WIDTH - 2.0 * MARGIN));
    }

    #[test]
    fn a_figure_draws_whiskers_and_hatching() {
        let bar = |b: &str, place, m| Bar {
            series: Series::new(b, place),
            stats: stats(m),
        };
        let fig = Figure {
            title: "T".into(),
            caption: "C".into(),
            panels: vec![Panel::Bars(BarPanel {
                title: "P".into(),
                id: "x.y".into(),
                y_label: "ms".into(),
                scale: Choice::Auto,
                bars: vec![
                    bar("runc", Place::Host, 50.0),
                    bar("vm", Place::Rig, 4000.0),
                ],
            })],
        };
        let svg = render(&fig).expect("svg");
        assert!(svg.contains("(log scale)") && svg.contains("(rig)"));
        // Two whiskers of three strokes each, hatch lines and axes: many more paths than bars.
        assert!(svg.matches("<polyline").count() > 10, "{svg}");
    }
}
