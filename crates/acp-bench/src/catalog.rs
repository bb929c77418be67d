//! A generated catalog, loaded through the admin API: one shipped variant per product with stock no run can
//! exhaust, so every flow can complete and stock is still tracked (and decremented) as in a real store.

use serde_json::json;

use crate::error::BenchError;

/// Stock per variant: far beyond what any run sells, within PostgreSQL's integer range.
const STOCK: i64 = 1_000_000_000;

pub fn variant_id(index: usize) -> String {
    format!("var_bench_{index:04}")
}

/// Feed `Product` lines (JSONL), one variant each.
pub fn products_jsonl(count: usize) -> String {
    (0..count)
        .map(|i| {
            let price = 1000 + (i % 10) as i64 * 250;
            json!({
                "id": format!("prod_bench_{i:04}"),
                "title": format!("Bench Item {i}"),
                "description": {"plain": "A generated product of the benchmark catalog."},
                "url": format!("https://bench.example/products/{i}"),
                "variants": [{
                    "id": variant_id(i),
                    "title": format!("Bench Item {i}"),
                    "price": {"amount": price, "currency": "USD"},
                    "availability": {"available": true, "status": "in_stock"},
                    "categories": [{"value": "Bench", "taxonomy": "merchant"}],
                    "condition": ["new"],
                    "seller": {"name": "Bench Supply"}
                }]
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Merchant attributes (JSONL): tracked stock, shipped, standard tax.
pub fn attributes_jsonl(count: usize) -> String {
    (0..count)
        .map(|i| {
            json!({
                "variant_id": variant_id(i),
                "stock_quantity": STOCK,
                "max_quantity_per_order": null,
                "tax_category": "standard",
                "weight_grams": 200,
                "requires_shipping": true,
                "disclosures": []
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Imports the catalog through `POST /admin/catalog/import` and `/admin/catalog/attributes`.
pub async fn load(client: &reqwest::Client, base_url: &str, admin_token: &str, count: usize) -> Result<(), BenchError> {
    for (path, body) in [
        ("/admin/catalog/import", products_jsonl(count)),
        ("/admin/catalog/attributes", attributes_jsonl(count)),
    ] {
        let response = client
            .post(format!("{base_url}{path}"))
            .bearer_auth(admin_token)
            .header("Content-Type", "application/jsonl")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(BenchError::Setup(format!("{path} answered {status}: {text}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_line_is_json_with_its_variant() {
        let lines: Vec<serde_json::Value> = products_jsonl(3)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["variants"][0]["id"], "var_bench_0002");
        let attributes: Vec<serde_json::Value> = attributes_jsonl(3)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(attributes[1]["variant_id"], "var_bench_0001");
        assert_eq!(attributes[1]["stock_quantity"], STOCK);
    }
}
