//! ISO 4217 minor-unit exponents. Amounts are already integers in minor units; the exponent tells how many of
//! them make a major unit (JPY 0, USD 2, KWD 3) and which codes exist at all.

/// The minor-unit exponent of `code` (case-insensitive), or `None` for a code we do not price in.
pub fn exponent(code: &str) -> Option<u32> {
    let code = code.to_ascii_uppercase();
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF",
        "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const TWO: &[&str] = &[
        "AED", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "COP", "CZK", "DKK", "EGP", "EUR", "GBP", "HKD", "HUF", "IDR",
        "ILS", "INR", "MAD", "MXN", "MYR", "NOK", "NZD", "PEN", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "SAR", "SEK",
        "SGD", "THB", "TRY", "TWD", "UAH", "USD", "ZAR",
    ];
    if ZERO.contains(&code.as_str()) {
        Some(0)
    } else if THREE.contains(&code.as_str()) {
        Some(3)
    } else if TWO.contains(&code.as_str()) {
        Some(2)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::exponent;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(exponent("jpy"), Some(0));
        assert_eq!(exponent("USD"), Some(2));
        assert_eq!(exponent("eur"), Some(2));
        assert_eq!(exponent("KWD"), Some(3));
        assert_eq!(exponent("bhd"), Some(3));
        assert_eq!(exponent("xyz"), None);
    }
}
