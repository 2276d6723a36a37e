//! One sort for the whole Worker. The standard library's sorts are fast and large: each
//! distinct element type and comparison gets its own copy of several kilobytes of code (about
//! 57 KB of the wasm for the eight sorts the Worker makes). None of them is on the request
//! path, and each sorts by a total order (ties broken to the last field), so an unstable
//! heapsort, a few hundred bytes per copy, does the same work in O(n log n).

use std::cmp::Ordering;

/// Sorts `v` into the order `cmp` gives, in place. Not stable: equal elements may come in
/// any order, so `cmp` should order by everything that tells them apart.
pub fn sort_by<T>(v: &mut [T], mut cmp: impl FnMut(&T, &T) -> Ordering) {
    let mut less = |a: &T, b: &T| cmp(a, b) == Ordering::Less;
    let n = v.len();
    // Build a max-heap, then move its top to the end one at a time.
    for start in (0..n / 2).rev() {
        sift_down(v, start, n, &mut less);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift_down(v, 0, end, &mut less);
    }
}

/// `sort_by` in the elements' own order.
pub fn sort<T: Ord>(v: &mut [T]) {
    sort_by(v, T::cmp);
}

fn sift_down<T>(v: &mut [T], mut node: usize, end: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    loop {
        let mut child = 2 * node + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && less(&v[child], &v[child + 1]) {
            child += 1;
        }
        if !less(&v[node], &v[child]) {
            return;
        }
        v.swap(node, child);
        node = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the standard library's sort, on every length up to 40 and many arrangements
    /// (a small generator, so the test needs no dependency), duplicates included.
    #[test]
    fn sorts_as_the_standard_library_does() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..40 {
            for round in 0..50 {
                let mut v: Vec<u32> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % if round % 2 == 0 { 5 } else { 1000 }) as u32
                    })
                    .collect();
                let mut expected = v.clone();
                expected.sort();
                sort(&mut v);
                assert_eq!(v, expected, "length {len}, round {round}");
            }
        }
    }

    #[test]
    fn sorts_by_the_order_given() {
        let mut v = vec![("b", 1), ("a", 2), ("c", 2), ("d", 0)];
        sort_by(&mut v, |a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        assert_eq!(v, [("a", 2), ("c", 2), ("b", 1), ("d", 0)]);
    }
}
