//! The report's charts over the run's time, as inline SVG: every operation's latency, latency
//! quantiles per time bucket, and throughput; each with the faults shaded.
//!
//! Owns the charts' geometry (the time axis every chart shares, so a fault sits at the same x in
//! all three), the statistics they draw (nearest-rank quantiles, per-bucket rates) and the
//! deterministic sampling that bounds the point count.
//! Must not: read files, or know any workload's functions beyond their `f` names; colours are
//! handed out by position in the sorted list of names.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::escape;
use super::events::{FaultInterval, OutcomeClass, ReportOp, RunHistory};
use crate::history::Time;

/// Width of every chart; the browser scales it down on a narrow window.
pub const CHART_WIDTH_PX: f64 = 1000.0;
/// Height of a chart's plot area.
const PLOT_HEIGHT_PX: f64 = 240.0;
/// Room for the value axis labels.
const MARGIN_LEFT_PX: f64 = 64.0;
const MARGIN_RIGHT_PX: f64 = 16.0;
/// Room above the fault label rows.
const MARGIN_TOP_PX: f64 = 8.0;
/// Room for the time axis labels and its title.
const MARGIN_BOTTOM_PX: f64 = 36.0;
/// One row of fault labels per fault class above the plot, so labels of overlapping faults of
/// different classes never cover each other.
const FAULT_ROW_PX: f64 = 14.0;
/// Latency points drawn at most. Beyond it operations are sampled evenly
/// ([`sample_indexes`]): at about 100 bytes a point, 20 000 points keep the page near 2 MB
/// however long the run, while a 10-minute run at the default rate (30 000 operations) is only
/// thinned by a third. Quantiles and rates are computed from every operation.
pub const POINTS_MAX: usize = 20_000;
/// Room between the last fault row and the plot, so the row's name and the top tick label of
/// the value axis do not collide.
const FAULT_ROWS_GAP_PX: f64 = 8.0;
/// Width of a character of a fault label (10 px sans-serif), to tell whether it fits its bar.
const FAULT_LABEL_CHAR_PX: f64 = 6.0;
/// Time buckets of the quantile and throughput charts at most.
const BUCKETS_MAX: u64 = 150;
/// Shortest time bucket: at the default 50 operations per second, a second holds enough
/// operations for a p95 to mean something.
const BUCKET_NS_MIN: u64 = 1_000_000_000;
/// Time axis ticks at most.
const TIME_TICKS_MAX: u64 = 12;
/// Latencies below this are drawn at it, so that a log axis has a floor.
const LATENCY_FLOOR_MS: f64 = 0.01;
/// Nanoseconds per millisecond and per second.
const NS_PER_MS: f64 = 1e6;
const NS_PER_SEC: f64 = 1e9;
/// Colours of functions, by position in the sorted list of function names; a ninth function
/// shares the first's colour. Eight is more than any workload has.
pub const FUNCTION_COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];
/// Shading of the fault classes the nemesis has today; others get [`FAULT_COLOUR_OTHER`].
const FAULT_COLOURS: [(&str, &str); 3] = [
    ("kill", "#e41a1c"),
    ("pause", "#ff9900"),
    ("partition", "#377eb8"),
];
const FAULT_COLOUR_OTHER: &str = "#7f7f7f";
/// The quantiles drawn, with their line colours.
const QUANTILES: [(&str, f64, &str); 4] = [
    ("p50", 0.50, "#2b8cbe"),
    ("p95", 0.95, "#e6a100"),
    ("p99", 0.99, "#d7191c"),
    ("max", 1.00, "#333333"),
];

/// The geometry the three charts share.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Where the time axis ends, ns (never 0).
    end: Time,
    /// Fault classes, one label row each, in order of first appearance.
    fault_classes: Vec<String>,
}

impl Frame {
    /// The frame for `history`'s time span and `faults`' classes.
    #[must_use]
    pub fn new(history: &RunHistory, faults: &[FaultInterval]) -> Frame {
        let mut fault_classes: Vec<String> = Vec::new();
        for fault in faults {
            if !fault_classes.contains(&fault.class) {
                fault_classes.push(fault.class.clone());
            }
        }
        Frame {
            end: history.end.max(1),
            fault_classes,
        }
    }

    /// The x of time `t`.
    #[must_use]
    pub fn x(&self, t: Time) -> f64 {
        let plot_width = CHART_WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
        #[allow(clippy::cast_precision_loss)] // ns of a run fit an f64's mantissa by far
        let share = t.min(self.end) as f64 / self.end as f64;
        MARGIN_LEFT_PX + plot_width * share
    }

    /// The top of the plot area, below the fault label rows.
    fn plot_top(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // a handful of classes
        let rows = self.fault_classes.len() as f64;
        MARGIN_TOP_PX + rows * FAULT_ROW_PX + FAULT_ROWS_GAP_PX
    }

    fn plot_bottom(&self) -> f64 {
        self.plot_top() + PLOT_HEIGHT_PX
    }

    fn height(&self) -> f64 {
        self.plot_bottom() + MARGIN_BOTTOM_PX
    }

    /// The time bucket width of the quantile and throughput charts.
    #[must_use]
    pub fn bucket_ns(&self) -> u64 {
        self.end.div_ceil(BUCKETS_MAX).max(BUCKET_NS_MIN)
    }

    fn bucket_count(&self) -> usize {
        usize::try_from(self.end.div_ceil(self.bucket_ns())).unwrap_or(usize::MAX)
    }

    /// Opens a chart: the `<svg>` element, its shaded faults and their labels. Close it with
    /// [`Frame::close`].
    fn open(&self, out: &mut String, name: &str, faults: &[FaultInterval]) {
        let _ = write!(
            out,
            "<svg class=\"chart\" id=\"{name}\" xmlns=\"http://www.w3.org/2000/svg\" \
             viewBox=\"0 0 {CHART_WIDTH_PX} {height:.0}\" width=\"{CHART_WIDTH_PX}\" \
             height=\"{height:.0}\">",
            height = self.height()
        );
        let top = self.plot_top();
        for fault in faults {
            let row = self
                .fault_classes
                .iter()
                .position(|class| class == &fault.class)
                .unwrap_or(0);
            let (x0, x1) = (self.x(fault.start), self.x(fault.end));
            let width = (x1 - x0).max(1.0);
            let colour = fault_colour(&fault.class);
            let failed = if fault.failed { " (failed)" } else { "" };
            let label = format!("{} {}{failed}", fault.class, fault.target);
            let tip = format!(
                "{label}: {:.2} s to {:.2} s",
                seconds(fault.start),
                seconds(fault.end)
            );
            let _ = write!(
                out,
                "<rect class=\"fault\" data-fault=\"{class}\" x=\"{x0:.1}\" y=\"{top:.1}\" \
                 width=\"{width:.1}\" height=\"{PLOT_HEIGHT_PX}\" fill=\"{colour}\" \
                 fill-opacity=\"0.13\"><title>{tip}</title></rect>",
                class = escape(&fault.class),
                tip = escape(&tip),
            );
            #[allow(clippy::cast_precision_loss)] // a handful of classes
            let row_y = MARGIN_TOP_PX + row as f64 * FAULT_ROW_PX;
            let dash = if fault.failed {
                " stroke-dasharray=\"3 2\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" \
                 fill=\"{colour}\" fill-opacity=\"0.35\" stroke=\"{colour}\"{dash}>\
                 <title>{tip}</title></rect>",
                y = row_y + 1.0,
                h = FAULT_ROW_PX - 2.0,
                tip = escape(&tip),
            );
            // The row names the class; the bar names the target when it fits, and its hover
            // text always does (a long run's faults are too narrow for labels).
            let target = format!("{}{failed}", fault.target);
            #[allow(clippy::cast_precision_loss)] // a short label
            let label_px = target.chars().count() as f64 * FAULT_LABEL_CHAR_PX;
            if label_px + 4.0 <= width {
                let _ = write!(
                    out,
                    "<text class=\"flabel\" x=\"{tx:.1}\" y=\"{ty:.1}\">{}</text>",
                    escape(&target),
                    tx = x0 + 2.0,
                    ty = row_y + FAULT_ROW_PX - 3.5,
                );
            }
        }
        for (row, class) in self.fault_classes.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)] // a handful of classes
            let ty = MARGIN_TOP_PX + (row + 1) as f64 * FAULT_ROW_PX - 3.5;
            let _ = write!(
                out,
                "<text class=\"flabel\" x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>",
                escape(class),
                tx = MARGIN_LEFT_PX - 4.0,
            );
        }
        let _ = write!(
            out,
            "<rect class=\"frame\" x=\"{MARGIN_LEFT_PX}\" y=\"{top:.1}\" width=\"{w:.1}\" \
             height=\"{PLOT_HEIGHT_PX}\"/>",
            w = CHART_WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX
        );
        self.time_axis(out);
    }

    fn close(out: &mut String) {
        out.push_str("</svg>\n");
    }

    /// Ticks and labels of the shared time axis, in seconds.
    fn time_axis(&self, out: &mut String) {
        let step = time_tick_step_ns(self.end);
        let bottom = self.plot_bottom();
        let mut t = 0;
        while t <= self.end {
            let x = self.x(t);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\
                 <text class=\"tick\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{s}</text>",
                top = self.plot_top(),
                y = bottom + 14.0,
                s = format_seconds_tick(t),
            );
            t += step;
        }
        let _ = write!(
            out,
            "<text class=\"axis\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">time (s)</text>",
            x = (MARGIN_LEFT_PX + CHART_WIDTH_PX - MARGIN_RIGHT_PX) / 2.0,
            y = bottom + 30.0,
        );
    }
}

/// A log-scale value axis in milliseconds, whole decades from `low_ms` to `high_ms`.
#[derive(Clone, Copy, Debug)]
struct LogAxis {
    low_ms: f64,
    high_ms: f64,
    top: f64,
}

impl LogAxis {
    /// The decades covering `values_ms` (and `at_least_ms`, say the request timeout).
    fn covering(values_ms: impl Iterator<Item = f64>, at_least_ms: Option<f64>, top: f64) -> Self {
        let (mut low, mut high) = (f64::INFINITY, 0.0_f64);
        for value in values_ms.chain(at_least_ms) {
            let value = value.max(LATENCY_FLOOR_MS);
            low = low.min(value);
            high = high.max(value);
        }
        if !low.is_finite() {
            (low, high) = (1.0, 1000.0);
        }
        let low_ms = 10_f64.powf(low.log10().floor());
        let mut high_ms = 10_f64.powf(high.log10().ceil());
        if high_ms <= low_ms {
            high_ms = low_ms * 10.0;
        }
        LogAxis {
            low_ms,
            high_ms,
            top,
        }
    }

    fn y(&self, value_ms: f64) -> f64 {
        let span = self.high_ms.log10() - self.low_ms.log10();
        let share = (value_ms.max(self.low_ms).log10() - self.low_ms.log10()) / span;
        self.top + PLOT_HEIGHT_PX * (1.0 - share.clamp(0.0, 1.0))
    }

    fn draw(&self, out: &mut String, title: &str) {
        let mut decade = self.low_ms;
        while decade <= self.high_ms * 1.000_001 {
            let y = self.y(decade);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{MARGIN_LEFT_PX}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" \
                 y2=\"{y:.1}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{ty:.1}\" \
                 text-anchor=\"end\">{label}</text>",
                x2 = CHART_WIDTH_PX - MARGIN_RIGHT_PX,
                x = MARGIN_LEFT_PX - 4.0,
                ty = y + 3.5,
                label = format_ms(decade),
            );
            decade *= 10.0;
        }
        axis_title(out, self.top, title);
    }
}

fn axis_title(out: &mut String, top: f64, title: &str) {
    let (x, y) = (12.0, top + PLOT_HEIGHT_PX / 2.0);
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"{x}\" y=\"{y:.1}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 {x} {y:.1})\">{title}</text>"
    );
}

/// Fill colour of a fault class.
#[must_use]
pub fn fault_colour(class: &str) -> &'static str {
    FAULT_COLOURS
        .iter()
        .find(|(name, _)| *name == class)
        .map_or(FAULT_COLOUR_OTHER, |(_, colour)| colour)
}

/// The CSS that colours functions (`c0`...) and styles outcomes, shared by every chart.
#[must_use]
pub fn style() -> String {
    let mut css = String::new();
    for (index, colour) in FUNCTION_COLOURS.iter().enumerate() {
        let _ = write!(css, ".c{index}{{fill:{colour};stroke:{colour}}}");
    }
    css.push_str(
        ".pt.ok{fill-opacity:.55;stroke:none}.pt.fail{fill-opacity:.9;stroke:none}\
         .pt.info{fill:none;stroke-width:1.2}\
         .line{fill:none;stroke-width:1.5}.line.fail{stroke-dasharray:6 3}\
         .line.info{stroke-dasharray:1.5 3}\
         .grid{stroke:#e4e4e4;stroke-width:1}.frame{fill:none;stroke:#999}\
         .tick{font-size:10px;fill:#555}.axis{font-size:11px;fill:#333}\
         .flabel{font-size:10px;fill:#222}\n",
    );
    css
}

/// The colour class of function `f` among `functions` (sorted).
fn colour_class(functions: &[String], f: &str) -> usize {
    functions
        .binary_search_by(|name| name.as_str().cmp(f))
        .unwrap_or(0)
        % FUNCTION_COLOURS.len()
}

/// The sorted function names of `ops`.
#[must_use]
pub fn functions(ops: &[ReportOp]) -> Vec<String> {
    let mut names: Vec<String> = ops.iter().map(|op| op.f.clone()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// An HTML legend of functions and outcomes, matching the charts' colours and markers.
#[must_use]
pub fn legend(functions: &[String]) -> String {
    let mut html = String::from("<p class=\"legend\">");
    for f in functions {
        let _ = write!(
            html,
            "<span style=\"color:{}\">&#9679; {}</span> ",
            FUNCTION_COLOURS[colour_class(functions, f)],
            escape(f)
        );
    }
    html.push_str(
        "&nbsp; markers: &#9679; ok, &#9632; fail, &#9661; info (drawn at the top: an unknown \
         outcome has no latency); lines in the throughput chart: solid ok, dashed fail, dotted \
         info</p>\n",
    );
    html
}

/// Indexes of `count` items to draw when at most `max` may be: all of them, or `max` spread
/// evenly (the i-th kept is the first of the i-th of `max` equal runs), so the same history
/// always draws the same points.
#[must_use]
pub fn sample_indexes(count: usize, max: usize) -> Vec<usize> {
    if count <= max {
        return (0..count).collect();
    }
    (0..max).map(|i| i * count / max).collect()
}

/// Chart (a): every completed operation at its call time and latency; `info` operations along
/// the top. Returns the SVG, and how many operations it draws of how many completed.
#[must_use]
pub fn latency_chart(
    history: &RunHistory,
    frame: &Frame,
    faults: &[FaultInterval],
    functions: &[String],
    timeout_ms: Option<f64>,
) -> (String, usize, usize) {
    let completed: Vec<&ReportOp> = history.ops.iter().filter(|op| op.ret.is_some()).collect();
    let axis = LogAxis::covering(
        completed.iter().filter_map(|op| op.latency()).map(to_ms),
        timeout_ms,
        frame.plot_top(),
    );
    let mut out = String::new();
    frame.open(&mut out, "latency-raw", faults);
    axis.draw(&mut out, "latency (ms, log)");
    if let Some(timeout_ms) = timeout_ms {
        let y = axis.y(timeout_ms);
        let _ = write!(
            out,
            "<line x1=\"{MARGIN_LEFT_PX}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" \
             stroke=\"#999\" stroke-dasharray=\"4 4\"/><text class=\"tick\" x=\"{x2:.1}\" \
             y=\"{ty:.1}\" text-anchor=\"end\">request timeout</text>",
            x2 = CHART_WIDTH_PX - MARGIN_RIGHT_PX,
            ty = y - 3.0,
        );
    }
    let shown = sample_indexes(completed.len(), POINTS_MAX);
    for &index in &shown {
        let op = completed[index];
        let class = colour_class(functions, &op.f);
        let x = frame.x(op.call);
        let latency = op.latency();
        let tip = format!(
            "{f}{key} p{process} {latency} {outcome} at {call:.3} s",
            f = op.f,
            key = op.key.as_ref().map(|k| format!(" {k}")).unwrap_or_default(),
            process = op.process,
            latency = latency.map_or_else(|| "?".to_owned(), |ns| format_ms(to_ms(ns))),
            outcome = op.outcome.name(),
            call = seconds(op.call),
        );
        let tip = escape(&tip);
        match (op.outcome, latency) {
            (OutcomeClass::Ok, Some(ns)) => {
                let _ = write!(
                    out,
                    "<circle class=\"pt c{class} ok\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\">\
                     <title>{tip}</title></circle>",
                    y = axis.y(to_ms(ns)),
                );
            }
            (OutcomeClass::Fail, Some(ns)) => {
                let _ = write!(
                    out,
                    "<rect class=\"pt c{class} fail\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"4\" \
                     height=\"4\"><title>{tip}</title></rect>",
                    x = x - 2.0,
                    y = axis.y(to_ms(ns)) - 2.0,
                );
            }
            _ => {
                let _ = write!(
                    out,
                    "<path class=\"pt c{class} info\" d=\"M{x0:.1} {y0:.1}h6l-3 5z\">\
                     <title>{tip}</title></path>",
                    x0 = x - 3.0,
                    y0 = frame.plot_top() + 1.0,
                );
            }
        }
    }
    Frame::close(&mut out);
    (out, shown.len(), completed.len())
}

/// Nearest-rank quantile `q` (in (0, 1]) of `sorted`, which must not be empty: the smallest value
/// with at least `q` of the values at or below it.
///
/// # Panics
/// When `sorted` is empty.
#[must_use]
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    assert!(!sorted.is_empty(), "a quantile of no values");
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )] // a rank between 1 and the length
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The latencies (ns) of the operations with a response, by bucket of their call time, each
/// bucket as [`QUANTILES`]' values; `None` for a bucket without any.
#[must_use]
pub fn bucket_quantiles(ops: &[ReportOp], bucket_ns: u64, buckets: usize) -> Vec<Option<[u64; 4]>> {
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); buckets];
    for op in ops {
        if let Some(latency) = op.latency() {
            let bucket = usize::try_from(op.call / bucket_ns).unwrap_or(usize::MAX);
            if let Some(values) = latencies.get_mut(bucket) {
                values.push(latency);
            }
        }
    }
    latencies
        .into_iter()
        .map(|mut values| {
            if values.is_empty() {
                return None;
            }
            values.sort_unstable();
            Some(QUANTILES.map(|(_, q, _)| quantile(&values, q)))
        })
        .collect()
}

/// Chart (b): the latency quantiles of each time bucket, over operations with a response.
#[must_use]
pub fn quantile_chart(history: &RunHistory, frame: &Frame, faults: &[FaultInterval]) -> String {
    let bucket_ns = frame.bucket_ns();
    let buckets = frame.bucket_count();
    let values = bucket_quantiles(&history.ops, bucket_ns, buckets);
    let axis = LogAxis::covering(
        values.iter().flatten().flatten().map(|&ns| to_ms(ns)),
        None,
        frame.plot_top(),
    );
    let mut out = String::new();
    frame.open(&mut out, "latency-quantiles", faults);
    axis.draw(&mut out, "latency (ms, log)");
    for (which, (name, _, colour)) in QUANTILES.iter().enumerate() {
        // One polyline per run of buckets with values: an empty bucket is a gap, not a zero.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (bucket, value) in values.iter().enumerate() {
            match value {
                Some(value) => {
                    let middle = bucket_middle(bucket, bucket_ns, frame.end);
                    if let Some(run) = runs.last_mut() {
                        run.push((frame.x(middle), axis.y(to_ms(value[which]))));
                    }
                }
                None => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|run| !run.is_empty()) {
            polyline(&mut out, run, "", &format!("stroke=\"{colour}\""), name);
        }
    }
    let mut x = MARGIN_LEFT_PX + 8.0;
    for (name, _, colour) in QUANTILES {
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{x:.1}\" y=\"{y:.1}\" style=\"fill:{colour}\">{name}</text>",
            y = frame.plot_top() + 12.0,
        );
        x += 34.0;
    }
    Frame::close(&mut out);
    out
}

/// Draws `points` as one line classed `line` and `classes`, with `attributes`, named `name` on
/// hover.
fn polyline(out: &mut String, points: &[(f64, f64)], classes: &str, attributes: &str, name: &str) {
    let _ = write!(
        out,
        "<polyline class=\"line {classes}\" {attributes} points=\""
    );
    for (x, y) in points {
        let _ = write!(out, "{x:.1},{y:.1} ");
    }
    let _ = write!(out, "\"><title>{}</title></polyline>", escape(name));
}

/// Operations per second by (function, outcome) and bucket of call time. Every bucket is divided
/// by its full width, the last too: the final phase's burst of reads lands in a last bucket that
/// may be a fraction of a second long, and dividing by that fraction would dwarf the rest.
#[must_use]
pub fn bucket_rates(
    ops: &[ReportOp],
    bucket_ns: u64,
    buckets: usize,
) -> BTreeMap<(String, OutcomeClass), Vec<f64>> {
    let mut counts: BTreeMap<(String, OutcomeClass), Vec<u64>> = BTreeMap::new();
    for op in ops {
        let bucket = usize::try_from(op.call / bucket_ns).unwrap_or(usize::MAX);
        if bucket < buckets {
            counts
                .entry((op.f.clone(), op.outcome))
                .or_insert_with(|| vec![0; buckets])[bucket] += 1;
        }
    }
    counts
        .into_iter()
        .map(|(series, counts)| {
            #[allow(clippy::cast_precision_loss)] // ns of one run
            let bucket_secs = bucket_ns as f64 / NS_PER_SEC;
            #[allow(clippy::cast_precision_loss)] // counts of one run
            let rates = counts
                .iter()
                .map(|&count| count as f64 / bucket_secs)
                .collect();
            (series, rates)
        })
        .collect()
}

/// Chart (c): operations per second by function and outcome.
#[must_use]
pub fn rate_chart(
    history: &RunHistory,
    frame: &Frame,
    faults: &[FaultInterval],
    functions: &[String],
) -> String {
    let bucket_ns = frame.bucket_ns();
    let rates = bucket_rates(&history.ops, bucket_ns, frame.bucket_count());
    let peak = rates
        .values()
        .flatten()
        .fold(0.0_f64, |peak, &rate| peak.max(rate));
    let high = nice_ceiling(peak);
    let top = frame.plot_top();
    let y = |rate: f64| top + PLOT_HEIGHT_PX * (1.0 - rate / high);
    let mut out = String::new();
    frame.open(&mut out, "rate", faults);
    for step in 0..=4 {
        let rate = high * f64::from(step) / 4.0;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{MARGIN_LEFT_PX}\" y1=\"{yy:.1}\" x2=\"{x2:.1}\" \
             y2=\"{yy:.1}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{ty:.1}\" \
             text-anchor=\"end\">{rate}</text>",
            yy = y(rate),
            x2 = CHART_WIDTH_PX - MARGIN_RIGHT_PX,
            x = MARGIN_LEFT_PX - 4.0,
            ty = y(rate) + 3.5,
        );
    }
    axis_title(&mut out, top, "operations / s");
    for ((f, outcome), series) in &rates {
        let points: Vec<(f64, f64)> = series
            .iter()
            .enumerate()
            .map(|(bucket, &rate)| {
                (
                    frame.x(bucket_middle(bucket, bucket_ns, frame.end)),
                    y(rate),
                )
            })
            .collect();
        let class = colour_class(functions, f);
        polyline(
            &mut out,
            &points,
            &format!("c{class} {}", outcome.name()),
            &format!("data-series=\"{} {}\"", escape(f), outcome.name()),
            &format!("{f} {}", outcome.name()),
        );
    }
    Frame::close(&mut out);
    out
}

/// The middle of bucket `bucket`, or of its part before `end`.
fn bucket_middle(bucket: usize, bucket_ns: u64, end: Time) -> Time {
    let start = bucket as u64 * bucket_ns;
    start + (start + bucket_ns).min(end).saturating_sub(start) / 2
}

/// The smallest of 1, 2, 5 times a power of ten at or above `value` (at least 1).
fn nice_ceiling(value: f64) -> f64 {
    let mut decade = 1.0;
    loop {
        for factor in [1.0, 2.0, 5.0] {
            if decade * factor >= value {
                return decade * factor;
            }
        }
        decade *= 10.0;
    }
}

/// The time tick step: the first of a few round steps giving at most [`TIME_TICKS_MAX`] ticks.
fn time_tick_step_ns(end: Time) -> u64 {
    const STEPS_SECS: [u64; 10] = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600];
    let secs = end.div_ceil(1_000_000_000);
    let step = STEPS_SECS
        .iter()
        .copied()
        .find(|step| secs / step <= TIME_TICKS_MAX)
        .unwrap_or_else(|| secs.div_ceil(TIME_TICKS_MAX));
    step * 1_000_000_000
}

#[allow(clippy::cast_precision_loss)] // ns of one run
fn to_ms(ns: u64) -> f64 {
    ns as f64 / NS_PER_MS
}

#[allow(clippy::cast_precision_loss)] // ns of one run
fn seconds(ns: u64) -> f64 {
    ns as f64 / NS_PER_SEC
}

fn format_seconds_tick(ns: u64) -> String {
    format!("{}", ns / 1_000_000_000)
}

/// A latency for a label: `0.5 ms`, `12 ms`, `1.5 s`.
fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", trim(ms / 1000.0))
    } else {
        format!("{} ms", trim(ms))
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_of_known_data() {
        let values: Vec<u64> = (1..=100).collect();
        let got: Vec<u64> = QUANTILES
            .iter()
            .map(|&(_, q, _)| quantile(&values, q))
            .collect();
        assert_eq!(got, [50, 95, 99, 100]);
        assert_eq!(quantile(&[7], 0.5), 7);
        // Ten values: p50 is the 5th, p95 and p99 round up to the 10th.
        let ten: Vec<u64> = (10..20).collect();
        assert_eq!(quantile(&ten, 0.5), 14);
        assert_eq!(quantile(&ten, 0.95), 19);
        // 95 % of 32 is 30.4: the 31st value is the first with 95 % at or below it.
        let thirty_two: Vec<u64> = (1..=32).collect();
        assert_eq!(quantile(&thirty_two, 0.95), 31);
    }

    #[test]
    fn sampling_keeps_everything_under_the_cap_and_exactly_the_cap_over_it() {
        assert_eq!(sample_indexes(5, 10), [0, 1, 2, 3, 4]);
        let kept = sample_indexes(50_000, POINTS_MAX);
        assert_eq!(kept.len(), POINTS_MAX);
        assert!(
            kept.windows(2).all(|pair| pair[0] < pair[1]),
            "sorted, distinct"
        );
        assert_eq!(kept[0], 0);
        assert!(*kept.last().unwrap() >= 50_000 - 3, "spread to the end");
        assert_eq!(kept, sample_indexes(50_000, POINTS_MAX), "deterministic");
    }

    #[test]
    fn round_numbers_for_axes() {
        assert!((nice_ceiling(0.0) - 1.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(37.0) - 50.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(200.0) - 200.0).abs() < f64::EPSILON);
        assert_eq!(time_tick_step_ns(20_000_000_000), 2_000_000_000);
        assert_eq!(time_tick_step_ns(600_000_000_000), 60_000_000_000);
        assert_eq!(format_ms(0.5), "0.5 ms");
        assert_eq!(format_ms(1500.0), "1.5 s");
    }

    #[test]
    fn rates_count_by_call_time_function_and_outcome() {
        let op = |call_ms: u64, f: &str, outcome| ReportOp {
            process: 1,
            f: f.to_owned(),
            key: None,
            call: call_ms * 1_000_000,
            ret: Some(call_ms * 1_000_000 + 1),
            outcome,
            input: serde_json::Value::Null,
            output: None,
        };
        let ops = [
            op(100, "get", OutcomeClass::Ok),
            op(900, "get", OutcomeClass::Ok),
            op(1500, "get", OutcomeClass::Ok),
            op(1600, "put", OutcomeClass::Info),
            op(2500, "get", OutcomeClass::Ok),
        ];
        let rates = bucket_rates(&ops, 1_000_000_000, 2);
        assert_eq!(rates[&("get".to_owned(), OutcomeClass::Ok)], [2.0, 1.0]);
        assert_eq!(rates[&("put".to_owned(), OutcomeClass::Info)], [0.0, 1.0]);
        assert_eq!(
            rates.len(),
            2,
            "the call past the last bucket is not counted"
        );
        let quantiles = bucket_quantiles(&ops, 1_000_000_000, 3);
        assert_eq!(quantiles[0], Some([1, 1, 1, 1]));
        assert_eq!(quantiles[1], Some([1, 1, 1, 1]), "the info has no latency");
    }
}
