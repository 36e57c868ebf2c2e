//! Columnar tables of the synthetic logs: items, users, events.
//!
//! IDs here are raw, 0-based (`user_id`, `item_id`, `category`, ...), as in the Parquet files.
//! The sample builders turn them into vocabulary indices by adding 1 (index 0 is OOV).

/// A ragged array: row `i` is `values[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ragged<T> {
    /// Start of each row, plus the end (`len() + 1` entries, the first 0).
    pub offsets: Vec<usize>,
    /// All values, row after row.
    pub values: Vec<T>,
}

impl<T> Default for Ragged<T> {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            values: Vec::new(),
        }
    }
}

impl<T: Clone> Ragged<T> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.values[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Appends a row.
    pub fn push_row(&mut self, row: &[T]) {
        self.values.extend_from_slice(row);
        self.offsets.push(self.values.len());
    }

    /// Appends all rows of `other`.
    pub fn extend(&mut self, other: &Ragged<T>) {
        let base = self.values.len();
        self.values.extend_from_slice(&other.values);
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
    }
}

/// The item catalogue: observable features and the planted truth, one entry per item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemTable {
    /// Category, `0..categories`.
    pub category: Vec<u32>,
    /// Brand, `0..brands`.
    pub brand: Vec<u32>,
    /// Shop, `0..shops`.
    pub shop: Vec<u32>,
    /// Price level, `0..7`.
    pub price: Vec<u8>,
    /// Tags (1 to 3 per item; the first is the primary tag).
    pub tags: Ragged<u32>,
    /// Planted latent cluster, `0..item_clusters` (truth).
    pub cluster: Vec<u32>,
    /// Popularity: share of impressions the item draws (sums to 1; truth).
    pub popularity: Vec<f32>,
    /// Hidden quality (standard normal; truth).
    pub quality: Vec<f32>,
    /// Observable average rating, 1 to 5 (a noisy view of the quality).
    pub rating: Vec<f32>,
    /// Observable past sales count (a noisy view of popularity and quality).
    pub sales: Vec<u32>,
}

impl ItemTable {
    /// An empty table with room for `n` items.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            category: Vec::with_capacity(n),
            brand: Vec::with_capacity(n),
            shop: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            tags: Ragged::default(),
            cluster: Vec::with_capacity(n),
            popularity: Vec::with_capacity(n),
            quality: Vec::with_capacity(n),
            rating: Vec::with_capacity(n),
            sales: Vec::with_capacity(n),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.category.len()
    }

    /// True when there is no item.
    pub fn is_empty(&self) -> bool {
        self.category.is_empty()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        category: u32,
        brand: u32,
        shop: u32,
        price: u8,
        tags: &[u32],
        cluster: u32,
        popularity: f32,
        quality: f32,
        rating: f32,
        sales: u32,
    ) {
        self.category.push(category);
        self.brand.push(brand);
        self.shop.push(shop);
        self.price.push(price);
        self.tags.push_row(tags);
        self.cluster.push(cluster);
        self.popularity.push(popularity);
        self.quality.push(quality);
        self.rating.push(rating);
        self.sales.push(sales);
    }
}

/// Users: observable profile and planted truth, one entry per user, in user-ID order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserTable {
    /// User ID.
    pub user: Vec<u32>,
    /// Scenario (country), `0..num_scenarios`.
    pub country: Vec<u8>,
    /// Age band, `0..6`.
    pub age: Vec<u8>,
    /// Gender, `0..2`.
    pub gender: Vec<u8>,
    /// Planted user cluster (truth).
    pub cluster: Vec<u32>,
    /// Planted price level, `0..7` (truth).
    pub price_level: Vec<u8>,
    /// Activity multiplier (truth).
    pub activity: Vec<f32>,
    /// Taste factor, `dim` floats per user (truth).
    pub factor: Vec<f32>,
    /// Floats per user in `factor`.
    pub dim: usize,
    /// Planted favourite shops (truth; the SPP labels).
    pub favourite_shops: Ragged<u32>,
    /// Followed icons (observable events; the FIFP labels).
    pub follow_icon: Ragged<u32>,
    /// Time of each follow, aligned with `follow_icon`.
    pub follow_ts: Ragged<i64>,
    /// Events of user `j` are rows `event_offsets[j]..event_offsets[j + 1]` of the
    /// accompanying [`Events`].
    pub event_offsets: Vec<usize>,
}

impl UserTable {
    /// An empty table for users with `dim`-dimensional factors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            event_offsets: vec![0],
            ..Default::default()
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True when there is no user.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// The event rows of user number `j` (position in this table).
    pub fn events_of(&self, j: usize) -> std::ops::Range<usize> {
        self.event_offsets[j]..self.event_offsets[j + 1]
    }

    /// The taste factor of user number `j`.
    pub fn factor_of(&self, j: usize) -> &[f32] {
        &self.factor[j * self.dim..(j + 1) * self.dim]
    }

    /// Appends all users of `other` (whose events were appended after `events_base` events).
    pub fn extend(&mut self, other: &UserTable, events_base: usize) {
        self.user.extend_from_slice(&other.user);
        self.country.extend_from_slice(&other.country);
        self.age.extend_from_slice(&other.age);
        self.gender.extend_from_slice(&other.gender);
        self.cluster.extend_from_slice(&other.cluster);
        self.price_level.extend_from_slice(&other.price_level);
        self.activity.extend_from_slice(&other.activity);
        self.factor.extend_from_slice(&other.factor);
        self.favourite_shops.extend(&other.favourite_shops);
        self.follow_icon.extend(&other.follow_icon);
        self.follow_ts.extend(&other.follow_ts);
        self.event_offsets
            .extend(other.event_offsets[1..].iter().map(|o| o + events_base));
    }
}

/// Behaviour-type bits of [`Events::behaviour`].
pub mod behaviour {
    /// The impression was clicked.
    pub const CLICK: u8 = 1;
    /// The item was added to favourites (bookmarked) after the click.
    pub const FAV: u8 = 2;
    /// The item was added to the cart after the click.
    pub const CART: u8 = 4;
    /// The item was bought (after being added to the cart).
    pub const PURCHASE: u8 = 8;
    /// Names of the behaviour types, in bit order.
    pub const NAMES: [&str; 4] = ["click", "fav", "cart", "purchase"];
}

/// Channel codes of [`Events::channel`].
pub mod channel {
    /// Search result page (the session has a query).
    pub const SEARCH: u8 = 0;
    /// Recommendation feed.
    pub const RECOMMEND: u8 = 1;
    /// Advertisement slots.
    pub const ADS: u8 = 2;
    /// Names of the channels, in code order.
    pub const NAMES: [&str; 3] = ["search", "recommend", "ads"];
}

/// Events: one row per impression, with the behaviours that followed it. Rows are sorted by
/// user, then time (then session and position).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    /// User ID.
    pub user: Vec<u32>,
    /// Item ID.
    pub item: Vec<u32>,
    /// Unix time in seconds of the impression (its behaviours happen at the same time).
    pub ts: Vec<i64>,
    /// Day, `0..days` (the last day is the test day).
    pub day: Vec<u16>,
    /// Session number within the user's log.
    pub session: Vec<u32>,
    /// Position of the impression in its session.
    pub position: Vec<u8>,
    /// Scenario (country) of the event.
    pub country: Vec<u8>,
    /// Channel (see [`channel`]).
    pub channel: Vec<u8>,
    /// Query terms of the session (empty outside search).
    pub query: Ragged<u32>,
    /// Behaviour bits (see [`behaviour`]).
    pub behaviour: Vec<u8>,
    /// Noisy rating `scale * R[u, i] + noise` with R = U (C S), for NMF studies.
    pub rating: Vec<f32>,
}

impl Events {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }

    /// True when row `r` carries behaviour bit `b`.
    pub fn has(&self, r: usize, b: u8) -> bool {
        self.behaviour[r] & b != 0
    }

    /// Appends all rows of `other`.
    pub fn extend(&mut self, other: &Events) {
        self.user.extend_from_slice(&other.user);
        self.item.extend_from_slice(&other.item);
        self.ts.extend_from_slice(&other.ts);
        self.day.extend_from_slice(&other.day);
        self.session.extend_from_slice(&other.session);
        self.position.extend_from_slice(&other.position);
        self.country.extend_from_slice(&other.country);
        self.channel.extend_from_slice(&other.channel);
        self.query.extend(&other.query);
        self.behaviour.extend_from_slice(&other.behaviour);
        self.rating.extend_from_slice(&other.rating);
    }

    /// Number of behaviours of each type (click, fav, cart, purchase).
    pub fn behaviour_counts(&self) -> [u64; 4] {
        let mut c = [0u64; 4];
        for &b in &self.behaviour {
            for (t, n) in c.iter_mut().enumerate() {
                *n += u64::from(b >> t & 1);
            }
        }
        c
    }
}

/// Users and their events: a chunk of a stream, or a whole in-memory log.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The users, in ID order.
    pub users: UserTable,
    /// Their events, user after user.
    pub events: Events,
}

impl Chunk {
    /// An empty chunk for users with `dim`-dimensional factors.
    pub fn new(dim: usize) -> Self {
        Self {
            users: UserTable::new(dim),
            events: Events::default(),
        }
    }

    /// Appends another chunk (its users must follow this one's).
    pub fn append(&mut self, other: &Chunk) {
        let base = self.events.len();
        self.users.extend(&other.users, base);
        self.events.extend(&other.events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_extend_shifts_offsets() {
        let mut a = Ragged::default();
        a.push_row(&[1u32, 2]);
        let mut b = Ragged::default();
        b.push_row(&[]);
        b.push_row(&[3u32]);
        a.extend(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.row(0), &[1, 2]);
        assert!(a.row(1).is_empty());
        assert_eq!(a.row(2), &[3]);
    }
}
