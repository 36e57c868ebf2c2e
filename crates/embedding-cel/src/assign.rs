//! The entity -> cluster map, stored in the narrowest unsigned width that holds every
//! cluster number the table may create (1 byte up to 256 clusters, 2 up to 65,536, else 4).
//!
//! The spec counts 4 bytes per entity; storing the narrowest width is our design: at 50
//! clusters a billion users need 1 GB of assignment instead of 4 GB, and the memory ratio of a
//! small table is no longer capped at `d` by the assignment alone.

/// A packed assignment. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Up to 256 clusters.
    U8(Vec<u8>),
    /// Up to 65,536 clusters.
    U16(Vec<u16>),
    /// More.
    U32(Vec<u32>),
}

impl Assignment {
    /// Bytes per entity for tables of at most `max_clusters` clusters.
    pub fn width_for(max_clusters: usize) -> usize {
        if max_clusters <= 1 << 8 {
            1
        } else if max_clusters <= 1 << 16 {
            2
        } else {
            4
        }
    }

    /// `n` entities, entity `i` in cluster `f(i)`, stored `width` bytes each (1, 2 or 4).
    pub fn from_fn(n: usize, width: usize, f: impl Fn(usize) -> u32) -> Self {
        match width {
            1 => Self::U8((0..n).map(|i| f(i) as u8).collect()),
            2 => Self::U16((0..n).map(|i| f(i) as u16).collect()),
            _ => Self::U32((0..n).map(f).collect()),
        }
    }

    /// Bytes per entity.
    pub fn width(&self) -> usize {
        match self {
            Self::U8(_) => 1,
            Self::U16(_) => 2,
            Self::U32(_) => 4,
        }
    }

    /// Number of entities.
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }

    /// True without entities.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cluster of entity `i` (panics when out of range; callers check).
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Self::U8(v) => v[i] as u32,
            Self::U16(v) => v[i] as u32,
            Self::U32(v) => v[i],
        }
    }

    /// Moves entity `i` to cluster `c` (`c` must fit the width; the table guarantees it).
    #[inline]
    pub fn set(&mut self, i: usize, c: u32) {
        match self {
            Self::U8(v) => v[i] = c as u8,
            Self::U16(v) => v[i] = c as u16,
            Self::U32(v) => v[i] = c,
        }
    }

    /// Appends an entity in cluster `c`.
    pub fn push(&mut self, c: u32) {
        match self {
            Self::U8(v) => v.push(c as u8),
            Self::U16(v) => v.push(c as u16),
            Self::U32(v) => v.push(c),
        }
    }

    /// Bytes of the map.
    pub fn bytes(&self) -> usize {
        self.len() * self.width()
    }

    /// Every cluster number, widened.
    pub fn to_vec(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_hold_their_largest_cluster_and_round_trip() {
        assert_eq!(Assignment::width_for(256), 1);
        assert_eq!(Assignment::width_for(257), 2);
        assert_eq!(Assignment::width_for(65_536), 2);
        assert_eq!(Assignment::width_for(65_537), 4);
        for (w, top) in [(1usize, 255u32), (2, 65_535), (4, 1 << 20)] {
            let mut a = Assignment::from_fn(5, w, |i| i as u32);
            a.set(3, top);
            a.push(top);
            assert_eq!(a.to_vec(), vec![0, 1, 2, top, 4, top]);
            assert_eq!(a.bytes(), 6 * w);
        }
    }
}
