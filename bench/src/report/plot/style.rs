//! Who is drawn how: one fixed colour per backend, so that `runc` is the same blue in every plot,
//! and the lighter, hatched look that marks rows measured inside the nested-virtualisation rig.

use plotters::style::RGBColor;

use crate::results::Place;

/// The backends in the order every plot lists them.
const ORDER: [&str; 6] = ["runc", "crun", "ns", "trace", "vm", "qemu"];

/// Their colours (Tableau 10), index for index with [`ORDER`].
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x4e, 0x79, 0xa7), // runc: blue
    RGBColor(0xf2, 0x8e, 0x2b), // crun: orange
    RGBColor(0x59, 0xa1, 0x4f), // ns: green
    RGBColor(0xb0, 0x7a, 0xa1), // trace: purple
    RGBColor(0xe1, 0x57, 0x59), // vm: red
    RGBColor(0x9c, 0x75, 0x5f), // qemu: brown
];

/// Colours for backends this module does not know, picked by name so they too stay stable.
const OTHER: [RGBColor; 4] = [
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x79, 0x70, 0x6e),
];

/// Text, axes and whiskers.
pub(super) const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
/// Captions, tick labels and notes.
pub(super) const MUTED: RGBColor = RGBColor(0x66, 0x66, 0x66);
/// Grid lines.
pub(super) const GRID: RGBColor = RGBColor(0xe3, 0xe3, 0xe3);
/// The band behind rig rows.
pub(super) const RIG_BAND: RGBColor = RGBColor(0xf3, 0xf1, 0xec);

/// One line of a plot: a backend as measured in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Series {
    /// Sorts rig rows after host rows, then by [`ORDER`], then by name.
    key: (u8, usize, String),
    /// The backend's name.
    pub backend: String,
    /// Where it was measured.
    pub place: Place,
}

impl PartialOrd for Series {
    fn partial_cmp(&self, other: &Series) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Series {
    fn cmp(&self, other: &Series) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl Series {
    /// The series of `backend` measured at `place`.
    pub fn new(backend: &str, place: Place) -> Series {
        let rank = ORDER
            .iter()
            .position(|b| *b == backend)
            .unwrap_or(ORDER.len());
        Series {
            key: (u8::from(place == Place::Rig), rank, backend.to_string()),
            backend: backend.to_string(),
            place,
        }
    }

    /// Whether it was measured in the rig.
    pub fn rig(&self) -> bool {
        self.place == Place::Rig
    }

    /// `runc`, or `vm (rig)` for rig rows.
    pub fn label(&self) -> String {
        if self.rig() {
            format!("{} (rig)", self.backend)
        } else {
            self.backend.clone()
        }
    }

    /// The backend's colour (the same wherever it was measured).
    pub fn colour(&self) -> RGBColor {
        match ORDER.iter().position(|b| *b == self.backend) {
            Some(i) => COLOURS[i],
            None => {
                let h = self.backend.bytes().fold(0usize, |h, b| {
                    h.wrapping_mul(31).wrapping_add(usize::from(b))
                });
                OTHER[h % OTHER.len()]
            }
        }
    }

    /// The fill of its bars: the colour itself, or a lighter one for rig rows (which are also
    /// hatched).
    pub fn fill(&self) -> RGBColor {
        if self.rig() {
            lighten(self.colour(), 0.6)
        } else {
            self.colour()
        }
    }
}

/// `c` mixed with white, `by` (0..1) of the way.
pub(super) fn lighten(c: RGBColor, by: f64) -> RGBColor {
    let mix = |v: u8| (f64::from(v) + (255.0 - f64::from(v)) * by).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rows_sort_first_in_backend_order() {
        let mut v = [
            Series::new("vm", Place::Rig),
            Series::new("zzz", Place::Host),
            Series::new("trace", Place::Host),
            Series::new("runc", Place::Host),
            Series::new("qemu", Place::Rig),
        ];
        v.sort();
        let labels: Vec<String> = v.iter().map(Series::label).collect();
        assert_eq!(labels, ["runc", "trace", "zzz", "vm (rig)", "qemu (rig)"]);
    }

    #[test]
    fn colour_is_per_backend_not_per_place() {
        let host = Series::new("vm", Place::Host);
        let rig = Series::new("vm", Place::Rig);
        assert_eq!(host.colour(), rig.colour());
        assert_ne!(host.fill(), rig.fill());
        assert_eq!(
            Series::new("x", Place::Host).colour(),
            Series::new("x", Place::Rig).colour()
        );
    }
}
