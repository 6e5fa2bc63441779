//! Exact linear assignment (minimum-cost bipartite matching).
//!
//! [`linear_sum_assignment`] matches `min(rows, cols)` pairs like scipy's function of the same
//! name. [`assign_with_limit`] is the solver trackers use (`lap.lapjv` with `cost_limit`):
//! pairs costing `limit` or more are never matched, and the matching minimises
//! `sum(cost - limit)` over matched pairs. The problem splits into independent connected
//! components of affordable pairs, which keeps crowded scenes fast.

/// Result of an assignment with a cost limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assignment {
    /// `(row, col)` pairs, sorted by row.
    pub matches: Vec<(usize, usize)>,
    pub unmatched_rows: Vec<usize>,
    pub unmatched_cols: Vec<usize>,
}

/// Minimum-cost assignment of a dense `rows x cols` matrix (row-major `cost`); returns
/// `min(rows, cols)` pairs sorted by row.
pub fn linear_sum_assignment(cost: &[f64], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    if rows <= cols {
        hungarian(cost, rows, cols)
    } else {
        let transposed: Vec<f64> = (0..cols)
            .flat_map(|c| (0..rows).map(move |r| cost[r * cols + c]))
            .collect();
        let mut pairs: Vec<(usize, usize)> = hungarian(&transposed, cols, rows)
            .into_iter()
            .map(|(c, r)| (r, c))
            .collect();
        pairs.sort_unstable();
        pairs
    }
}

/// The gain `cost - limit` of matching a pair, kept finite for the solver: 0 for a pair that
/// is not affordable (or whose cost is NaN), at most [`GAIN_FLOOR`] below zero otherwise
/// (an infinite `limit` would make every gain `-inf` and the potentials NaN).
fn affordable_gain(cost: f64, limit: f64) -> f64 {
    let gain = cost - limit;
    if gain < 0.0 {
        gain.max(GAIN_FLOOR)
    } else {
        0.0
    }
}

/// Lowest gain the solver sees; far below any real IoU-based cost difference.
const GAIN_FLOOR: f64 = -1e12;

/// Shortest-augmenting-path Hungarian algorithm for `n <= m` (potentials, O(n^2 m)).
fn hungarian(cost: &[f64], n: usize, m: usize) -> Vec<(usize, usize)> {
    let a = |i: usize, j: usize| cost[(i - 1) * m + (j - 1)];
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = a(i0, j) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = (1..=m)
        .filter(|&j| p[j] != 0)
        .map(|j| (p[j] - 1, j - 1))
        .collect();
    pairs.sort_unstable();
    pairs
}

/// Assignment where pairs costing `limit` or more stay unmatched (see the module docs).
pub fn assign_with_limit(cost: &[f64], rows: usize, cols: usize, limit: f64) -> Assignment {
    // Union-find over rows (0..rows) and columns (rows..rows+cols) joined by affordable pairs.
    let mut parent: Vec<usize> = (0..rows + cols).collect();
    fn find(parent: &mut [usize], x: usize) -> usize {
        let mut root = x;
        while parent[root] != root {
            root = parent[root];
        }
        let mut node = x;
        while parent[node] != root {
            let next = parent[node];
            parent[node] = root;
            node = next;
        }
        root
    }
    for r in 0..rows {
        for c in 0..cols {
            if cost[r * cols + c] < limit {
                let (a, b) = (find(&mut parent, r), find(&mut parent, rows + c));
                parent[a] = b;
            }
        }
    }
    let mut components: std::collections::BTreeMap<usize, (Vec<usize>, Vec<usize>)> =
        Default::default();
    for r in 0..rows {
        let root = find(&mut parent, r);
        components.entry(root).or_default().0.push(r);
    }
    for c in 0..cols {
        let root = find(&mut parent, rows + c);
        components.entry(root).or_default().1.push(c);
    }
    let mut matches = Vec::new();
    for (comp_rows, comp_cols) in components.values() {
        if comp_rows.is_empty() || comp_cols.is_empty() {
            continue;
        }
        if comp_rows.len() == 1 && comp_cols.len() == 1 {
            matches.push((comp_rows[0], comp_cols[0]));
            continue;
        }
        let k = comp_rows.len().max(comp_cols.len());
        let mut square = vec![0.0; k * k];
        for (i, &r) in comp_rows.iter().enumerate() {
            for (j, &c) in comp_cols.iter().enumerate() {
                square[i * k + j] = affordable_gain(cost[r * cols + c], limit);
            }
        }
        for (i, j) in hungarian(&square, k, k) {
            if i < comp_rows.len() && j < comp_cols.len() && square[i * k + j] < 0.0 {
                matches.push((comp_rows[i], comp_cols[j]));
            }
        }
    }
    matches.sort_unstable();
    let mut row_used = vec![false; rows];
    let mut col_used = vec![false; cols];
    for &(r, c) in &matches {
        row_used[r] = true;
        col_used[c] = true;
    }
    Assignment {
        unmatched_rows: (0..rows).filter(|&r| !row_used[r]).collect(),
        unmatched_cols: (0..cols).filter(|&c| !col_used[c]).collect(),
        matches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Minimum over all injective maps of the smaller side (brute force).
    fn brute_force(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f64], rows: usize, cols: usize, r: usize, used: &mut Vec<bool>) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[r * cols + c] + go(cost, rows, cols, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        if rows <= cols {
            go(cost, rows, cols, 0, &mut vec![false; cols])
        } else {
            let t: Vec<f64> = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| cost[r * cols + c]))
                .collect();
            go(&t, cols, rows, 0, &mut vec![false; rows])
        }
    }

    /// Best `sum(cost - limit)` over partial matchings of affordable pairs (brute force).
    fn brute_force_limited(cost: &[f64], rows: usize, cols: usize, limit: f64) -> f64 {
        fn go(
            cost: &[f64],
            rows: usize,
            cols: usize,
            limit: f64,
            r: usize,
            used: &mut Vec<bool>,
        ) -> f64 {
            if r == rows {
                return 0.0;
            }
            let mut best = go(cost, rows, cols, limit, r + 1, used);
            for c in 0..cols {
                let v = cost[r * cols + c];
                if !used[c] && v < limit {
                    used[c] = true;
                    best = best.min(v - limit + go(cost, rows, cols, limit, r + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, rows, cols, limit, 0, &mut vec![false; cols])
    }

    #[test]
    fn known_three_by_three() {
        let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        assert_eq!(
            linear_sum_assignment(&cost, 3, 3),
            vec![(0, 1), (1, 0), (2, 2)]
        );
    }

    #[test]
    fn limit_leaves_expensive_pairs_unmatched() {
        let cost = [0.1, 0.9, 0.95, 0.2];
        let a = assign_with_limit(&cost, 2, 2, 0.8);
        assert_eq!(a.matches, vec![(0, 0), (1, 1)]);
        let a = assign_with_limit(&[0.9, 0.85], 1, 2, 0.8);
        assert!(a.matches.is_empty());
        assert_eq!((a.unmatched_rows, a.unmatched_cols), (vec![0], vec![0, 1]));
    }

    #[test]
    fn infinite_limit_and_nan_costs_terminate() {
        let cost = [0.2, f64::NAN, 0.5, 0.1, f64::INFINITY, 0.3];
        let a = assign_with_limit(&cost, 2, 3, f64::INFINITY);
        assert_eq!(a.matches.len(), 2);
        assert!(a.matches.iter().all(|&(r, c)| cost[r * 3 + c].is_finite()));
        let a = assign_with_limit(&cost, 2, 3, f64::NAN);
        assert!(a.matches.is_empty());
    }

    proptest! {
        #[test]
        fn hungarian_matches_brute_force(rows in 1usize..6, cols in 1usize..6, seed in prop::collection::vec(0.0f64..10.0, 36)) {
            let cost: Vec<f64> = seed[..rows * cols].to_vec();
            let pairs = linear_sum_assignment(&cost, rows, cols);
            prop_assert_eq!(pairs.len(), rows.min(cols));
            let total: f64 = pairs.iter().map(|&(r, c)| cost[r * cols + c]).sum();
            prop_assert!((total - brute_force(&cost, rows, cols)).abs() < 1e-9);
        }

        #[test]
        fn limited_assignment_matches_brute_force(rows in 0usize..6, cols in 0usize..6, seed in prop::collection::vec(0.0f64..1.0, 36), limit in 0.1f64..0.9) {
            let cost: Vec<f64> = seed[..rows * cols].to_vec();
            let a = assign_with_limit(&cost, rows, cols, limit);
            let total: f64 = a.matches.iter().map(|&(r, c)| cost[r * cols + c] - limit).sum();
            prop_assert!(a.matches.iter().all(|&(r, c)| cost[r * cols + c] < limit));
            prop_assert!((total - brute_force_limited(&cost, rows, cols, limit)).abs() < 1e-9);
            prop_assert_eq!(a.matches.len() + a.unmatched_rows.len(), rows);
            prop_assert_eq!(a.matches.len() + a.unmatched_cols.len(), cols);
        }
    }
}
