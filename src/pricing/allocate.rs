//! Largest-remainder allocation: splits an integer amount over weights so the parts add up exactly.

/// Splits `amount` (≥ 0) over `weights` in proportion, each part rounded down, then hands the units left over to
/// the largest fractional remainders (ties go to the earlier line). All-zero weights put everything on nothing: the
/// result is all zeros and the caller must not allocate in that case.
pub fn largest_remainder(amount: i64, weights: &[i64]) -> Vec<i64> {
    let total: i128 = weights.iter().map(|w| i128::from((*w).max(0))).sum();
    if amount <= 0 || total == 0 {
        return vec![0; weights.len()];
    }
    let amount = i128::from(amount);
    let mut parts: Vec<i128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        let scaled = amount * i128::from((*w).max(0));
        parts.push(scaled / total);
        remainders.push((scaled % total, i));
    }
    let mut left = amount - parts.iter().sum::<i128>();
    // Largest remainder first; on ties the earlier index wins (stable, deterministic).
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts.into_iter().map(|p| p as i64).collect()
}

#[cfg(test)]
mod tests {
    use super::largest_remainder;

    #[test]
    fn odd_cents_go_to_the_largest_remainders() {
        // 10.00 off three equal lines: 3.34 + 3.33 + 3.33.
        assert_eq!(largest_remainder(1000, &[1999, 1999, 1999]), vec![334, 333, 333]);
        // 5 cents over 1:2:2 → exact shares 1, 2, 2.
        assert_eq!(largest_remainder(5, &[100, 200, 200]), vec![1, 2, 2]);
        assert_eq!(largest_remainder(7, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(0, &[5, 5]), vec![0, 0]);
    }
}
