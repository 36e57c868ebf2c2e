//! Simulation of one user's days, and calibration of the behaviour intercepts on pilot users.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::SynthError;
use super::config::CHANNELS;
use super::table::{Chunk, behaviour, channel};
use super::world::{Calibration, UserState, World, normal, stream};
use crate::iter::rng;

/// One impression as the session walk produces it.
pub(crate) struct Impression<'a> {
    pub day: u16,
    pub ts: i64,
    pub session: u32,
    pub position: u8,
    pub channel: u8,
    pub query: &'a [u32],
    pub item: u32,
}

pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Poisson draw by multiplication of uniforms (lambda is small here: at most 50).
fn poisson(lambda: f32, rng: &mut ChaCha8Rng) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = (-(lambda as f64)).exp();
    let mut p = 1.0f64;
    let mut k = 0u32;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Appends `n` items drawn by `draw` to `out`, avoiding repeats (a few retries per slot).
fn draw_distinct(
    out: &mut Vec<u32>,
    n: usize,
    rng: &mut ChaCha8Rng,
    mut draw: impl FnMut(&mut ChaCha8Rng) -> u32,
) {
    for _ in 0..n {
        let mut item = draw(rng);
        for _ in 0..4 {
            if !out.contains(&item) {
                break;
            }
            item = draw(rng);
        }
        out.push(item);
    }
}

/// Start (seconds into the day) of a session of `nimp` impressions (2 s apart) drawn at `s0`:
/// not before `next_free` (the previous session's end plus a gap), moved back so that it ends
/// before midnight, and `None` when both cannot hold (the day is full): the session is dropped
/// rather than overlap the previous one and put the user's log out of time order.
fn session_start(s0: i64, next_free: i64, nimp: usize) -> Option<i64> {
    let start = s0.max(next_free).min(86_399 - 2 * nimp as i64);
    (start >= next_free).then_some(start)
}

/// Walks the user's days and sessions and calls `emit` for every impression, in time order.
/// Impressions never depend on earlier behaviours, which is what lets the pilot calibrate the
/// behaviour intercepts on impressions alone.
pub(crate) fn walk_sessions(
    w: &World,
    st: &UserState,
    rng: &mut ChaCha8Rng,
    mut emit: impl FnMut(&mut ChaCha8Rng, &Impression),
) {
    let cfg = &w.cfg;
    let a = &cfg.activity;
    let act = st.truth.activity;
    let p_day = (a.active_day_prob * act).min(a.max_active_day_prob);
    let lambda = (a.sessions_per_active_day * act.sqrt()).min(a.max_sessions_per_day);
    let terms = a.terms_per_category;
    let mut session = 0u32;
    let mut starts: Vec<i64> = Vec::new();
    let mut query: Vec<u32> = Vec::new();
    let mut chosen: Vec<u32> = Vec::new();
    for day in 0..cfg.days {
        if rng.random::<f32>() >= p_day {
            continue;
        }
        let focus = st.cluster_cum.sample(rng);
        let n = 1 + poisson(lambda - 1.0, rng);
        starts.clear();
        for _ in 0..n {
            let h = w.hour_cum.sample(rng) as i64;
            starts.push(h * 3600 + rng.random_range(0..3600));
        }
        starts.sort_unstable();
        let day0 = cfg.start_ts + day as i64 * 86_400;
        let mut next_free = 0i64;
        for &s0 in &starts {
            let ch = w.channel_cum.sample(rng) as u8;
            let nimp = a.impressions_per_session[ch as usize] as usize;
            let Some(start) = session_start(s0, next_free, nimp) else {
                continue;
            };
            let cluster = if rng.random::<f32>() < a.daily_focus {
                focus
            } else {
                st.cluster_cum.sample(rng)
            };
            query.clear();
            chosen.clear();
            match ch {
                channel::SEARCH => {
                    let cat = w.category_of_cluster(cluster, rng);
                    // The head term of the category, then up to max_query_terms - 1 others.
                    query.push(cat * terms);
                    let want = (a.max_query_terms.min(terms)) as usize;
                    let extra = rng.random_range(0..want);
                    while query.len() < 1 + extra {
                        let t = cat * terms + rng.random_range(1..terms);
                        if !query.contains(&t) {
                            query.push(t);
                        }
                    }
                    if w.by_category.is_empty(cat as usize) {
                        draw_distinct(&mut chosen, nimp, rng, |r| w.by_cluster.sample(cluster, r));
                    } else {
                        draw_distinct(&mut chosen, nimp, rng, |r| {
                            w.by_category.sample(cat as usize, r)
                        });
                    }
                }
                channel::RECOMMEND => {
                    // Each slot: the session's interest or a fresh draw from the user's taste.
                    draw_distinct(&mut chosen, nimp, rng, |r| {
                        let c = if r.random::<f32>() < 0.5 {
                            cluster
                        } else {
                            st.cluster_cum.sample(r)
                        };
                        w.by_cluster.sample(c, r)
                    });
                }
                _ => draw_distinct(&mut chosen, nimp, rng, |r| w.global.sample(0, r)),
            }
            for (p, &item) in chosen.iter().enumerate() {
                emit(
                    rng,
                    &Impression {
                        day: day as u16,
                        ts: day0 + start + 2 * p as i64,
                        session,
                        position: p as u8,
                        channel: ch,
                        query: &query,
                        item,
                    },
                );
            }
            next_free = start + 2 * nimp as i64 + 60;
            session += 1;
        }
    }
}

/// Simulates user `u` (its attributes from its own random stream, then its log) and appends it
/// to `out`.
pub(crate) fn simulate_user(w: &World, u: u64, out: &mut Chunk) {
    let mut r = rng(w.cfg.seed, stream::USERS.wrapping_add(u));
    let st = w.draw_user(&mut r, None);
    let t = &st.truth;
    let users = &mut out.users;
    users.user.push(u as u32);
    users.country.push(t.scenario);
    users.age.push(t.age);
    users.gender.push(t.gender);
    users.cluster.push(t.cluster);
    users.price_level.push(t.price_level);
    users.activity.push(t.activity);
    users.factor.extend_from_slice(&t.factor);
    users.favourite_shops.push_row(&t.favourite_shops);
    let icons: Vec<u32> = t.follows.iter().map(|f| f.0).collect();
    let times: Vec<i64> = t.follows.iter().map(|f| f.1).collect();
    users.follow_icon.push_row(&icons);
    users.follow_ts.push_row(&times);

    let cfg = &w.cfg;
    let b = &cfg.behaviour;
    let c = &w.calib;
    let s = t.scenario;
    let click_icpt = c.click[s as usize];
    let ev = &mut out.events;
    walk_sessions(w, &st, &mut r, |r, imp| {
        let i = imp.item as usize;
        let util = w.utility(&st, i);
        let mut bits = 0u8;
        let logit = b.sharpness[0] * (util + b.noise[0] * normal(r))
            + click_icpt
            + b.channel_offset[imp.channel as usize];
        if r.random::<f32>() < sigmoid(logit) {
            bits |= behaviour::CLICK;
            let fav = b.sharpness[1] * (util + b.noise[1] * normal(r)) + c.fav;
            if r.random::<f32>() < sigmoid(fav) {
                bits |= behaviour::FAV;
            }
            let cart = b.sharpness[2] * (util + b.noise[2] * normal(r)) + c.cart;
            if r.random::<f32>() < sigmoid(cart) {
                bits |= behaviour::CART;
                let dp = (w.hot[i].price as f32 - t.price_level as f32).abs();
                let buy = b.sharpness[3] * (util + b.noise[3] * normal(r)) - b.purchase_price * dp
                    + c.purchase;
                if r.random::<f32>() < sigmoid(buy) {
                    bits |= behaviour::PURCHASE;
                }
            }
        }
        let rating =
            cfg.rating.scale * st.r[w.hot[i].cluster as usize] + cfg.rating.noise * normal(r);
        ev.user.push(u as u32);
        ev.item.push(imp.item);
        ev.ts.push(imp.ts);
        ev.day.push(imp.day);
        ev.session.push(imp.session);
        ev.position.push(imp.position);
        ev.country.push(s);
        ev.channel.push(imp.channel);
        ev.query.push_row(imp.query);
        ev.behaviour.push(bits);
        ev.rating.push(rating);
    });
    out.users.event_offsets.push(out.events.len());
}

/// Value of `c` in `[-40, 40]` (to within 1e-10) where the increasing function `f` crosses `target`.
fn solve(target: f64, f: impl Fn(f32) -> f64) -> f32 {
    let (mut lo, mut hi) = (-40.0f32, 40.0f32);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Calibrates the intercepts on `pilot_users` simulated users (their own random stream, an
/// equal number per scenario) so that the expected click rate of each scenario and the
/// conditional rates of fav, cart and purchase equal the configured ones. Expectations are
/// taken over the pilot's impressions with one noise draw each, so the result is smooth in the
/// intercept and found by bisection.
pub(crate) fn calibrate(w: &World) -> Result<Calibration, SynthError> {
    let cfg = &w.cfg;
    let m = cfg.num_scenarios();
    // (scenario, channel, utility, |price gap|, standardised taste).
    let mut imps: Vec<(u8, u8, f32, f32, f32)> = Vec::new();
    for j in 0..cfg.pilot_users as u64 {
        let mut r = rng(cfg.seed, stream::PILOT.wrapping_add(j));
        let st = w.draw_user(&mut r, Some((j % m as u64) as u8));
        walk_sessions(w, &st, &mut r, |_, imp| {
            let i = imp.item as usize;
            imps.push((
                st.truth.scenario,
                imp.channel,
                w.utility(&st, i),
                (w.hot[i].price as f32 - st.truth.price_level as f32).abs(),
                st.taste_z[w.hot[i].cluster as usize],
            ));
        });
    }
    let mut r = rng(cfg.seed, stream::PILOT_NOISE);
    let noise: Vec<[f32; 4]> = imps
        .iter()
        .map(|_| {
            [
                normal(&mut r),
                normal(&mut r),
                normal(&mut r),
                normal(&mut r),
            ]
        })
        .collect();
    let b = &cfg.behaviour;
    let stage = |t: usize, j: usize| b.sharpness[t] * (imps[j].2 + b.noise[t] * noise[j][t]);

    // The pilot has equal users per scenario; weight its impressions back to the population's
    // scenario shares so the conditional rates hold for the population.
    let mut per_scenario = vec![0usize; m];
    for imp in &imps {
        per_scenario[imp.0 as usize] += 1;
    }
    let total_size: f32 = cfg.scenarios.sizes.iter().sum();
    let share: Vec<f32> = (0..m)
        .map(|s| {
            let pilot = per_scenario[s] as f32 / imps.len().max(1) as f32;
            if pilot > 0.0 {
                cfg.scenarios.sizes[s] / total_size / pilot
            } else {
                0.0
            }
        })
        .collect();
    let mut click = vec![0f32; m];
    let mut p_click = vec![0f32; imps.len()];
    for (s, icpt) in click.iter_mut().enumerate() {
        let rows: Vec<usize> = (0..imps.len())
            .filter(|&j| imps[j].0 as usize == s)
            .collect();
        if rows.is_empty() {
            // A scenario of size 0 draws no users; any other needs the pilot to reach it, or
            // its click intercept would stay 0 while ground_truth.json reports the target rate.
            if cfg.scenarios.sizes[s] > 0.0 {
                return Err(SynthError::Config(format!(
                    "scenario {s}: none of the {} pilot users saw an impression, so its click \
                     rate cannot be calibrated; raise `pilot_users`",
                    cfg.pilot_users
                )));
            }
            continue;
        }
        let off = |j: usize| b.channel_offset[(imps[j].1 as usize).min(CHANNELS - 1)];
        *icpt = solve(cfg.scenarios.ctr[s] as f64, |c| {
            rows.iter()
                .map(|&j| sigmoid(stage(0, j) + c + off(j)) as f64)
                .sum::<f64>()
                / rows.len() as f64
        });
        for &j in &rows {
            p_click[j] = sigmoid(stage(0, j) + *icpt + off(j)) * share[s];
        }
    }
    let weighted = |w8: &[f32], p: &dyn Fn(usize) -> f32| -> f64 {
        let num: f64 = (0..w8.len()).map(|j| w8[j] as f64 * p(j) as f64).sum();
        let den: f64 = w8.iter().map(|&x| x as f64).sum();
        num / den.max(1e-12)
    };
    let fav = solve(b.fav_given_click as f64, |c| {
        weighted(&p_click, &|j| sigmoid(stage(1, j) + c))
    });
    let cart = solve(b.cart_given_click as f64, |c| {
        weighted(&p_click, &|j| sigmoid(stage(2, j) + c))
    });
    let p_cart: Vec<f32> = (0..imps.len())
        .map(|j| p_click[j] * sigmoid(stage(2, j) + cart))
        .collect();
    let buy = |j: usize, c: f32| sigmoid(stage(3, j) - b.purchase_price * imps[j].3 + c);
    let purchase = solve(b.purchase_given_cart as f64, |c| {
        weighted(&p_cart, &|j| buy(j, c))
    });
    let ones: Vec<f32> = imps.iter().map(|imp| share[imp.0 as usize]).collect();
    let p_fav: Vec<f32> = (0..imps.len())
        .map(|j| p_click[j] * sigmoid(stage(1, j) + fav))
        .collect();
    let p_buy: Vec<f32> = (0..imps.len())
        .map(|j| p_cart[j] * buy(j, purchase))
        .collect();
    let taste = |w8: &[f32]| weighted(w8, &|j| imps[j].4) as f32;
    Ok(Calibration {
        click,
        fav,
        cart,
        purchase,
        mean_taste: [
            taste(&ones),
            taste(&p_click),
            taste(&p_fav),
            taste(&p_cart),
            taste(&p_buy),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn poisson_mean_is_lambda() {
        let mut r = ChaCha8Rng::seed_from_u64(3);
        let n = 20_000;
        let mean = (0..n).map(|_| poisson(2.5, &mut r) as f64).sum::<f64>() / n as f64;
        assert!((mean - 2.5).abs() < 0.06, "{mean}");
        assert_eq!(poisson(0.0, &mut r), 0);
    }

    #[test]
    fn solve_finds_the_crossing() {
        let c = solve(0.25, |c| sigmoid(c) as f64);
        assert!((sigmoid(c) - 0.25).abs() < 1e-5);
    }

    #[test]
    fn sessions_near_midnight_never_overlap_the_previous_one() {
        // A session of 8 drawn at 86385 is moved back to 86383 and ends at 86397; the next may
        // start at 86459. One of 4 drawn at 86390 fits neither after it nor before midnight.
        assert_eq!(session_start(86_385, 0, 8), Some(86_383));
        assert_eq!(session_start(86_390, 86_383 + 16 + 60, 4), None);
        // Moving back is fine while it stays after the previous session.
        assert_eq!(session_start(86_398, 86_300, 4), Some(86_391));
        assert_eq!(session_start(100, 500, 10), Some(500));
        assert_eq!(session_start(600, 500, 10), Some(600));
    }
}
