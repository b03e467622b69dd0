//! The on-time chart's geometry: each line a bar of on time, late, open and overdue, scaled so
//! that the longest bar is [`BAR_WIDTH`] wide. The template draws it as SVG.

use crate::kpi::report::Figures;

/// The chart's width for the longest bar.
pub const BAR_WIDTH: u64 = 400;

/// A part of a bar: its colour class, where it starts and how wide it is (in the chart's
/// units), and what it counts.
pub struct BarPart {
    pub class: &'static str,
    pub x: u64,
    pub width: u64,
    pub label: String,
}

/// The bar of `figures` when the longest line counts `longest` (at least 1): a part per count
/// that is not 0, each at least one unit wide.
pub fn bar(figures: &Figures, longest: u64) -> Vec<BarPart> {
    let mut x = 0;
    let mut bar = Vec::new();
    for (class, n, label) in [
        ("on-time", figures.finished_on_time, "finished on time"),
        (
            "extended",
            figures.finished_extended,
            "finished by the apology's new date",
        ),
        ("late", figures.finished_late, "finished late"),
        ("open", figures.open_in_time, "open, in time"),
        ("overdue", figures.open_overdue, "open, overdue"),
    ] {
        if n == 0 {
            continue;
        }
        let width = (n * BAR_WIDTH).div_ceil(longest.max(1));
        bar.push(BarPart {
            class,
            x,
            width,
            label: format!("{n} {label}"),
        });
        x += width;
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_line_fills_the_chart_and_empty_counts_draw_nothing() {
        let figures = Figures {
            finished_on_time: 3,
            finished_late: 1,
            open_overdue: 4,
            ..Figures::default()
        };
        let parts: Vec<(&str, u64, u64)> = bar(&figures, 8)
            .iter()
            .map(|p| (p.class, p.x, p.width))
            .collect();
        assert_eq!(
            parts,
            [
                ("on-time", 0, 150),
                ("late", 150, 50),
                ("overdue", 200, 200)
            ]
        );
        let short = bar(
            &Figures {
                finished_late: 1,
                ..Figures::default()
            },
            1000,
        );
        assert_eq!(
            (short[0].width, short[0].label.as_str()),
            (1, "1 finished late")
        );
    }
}
