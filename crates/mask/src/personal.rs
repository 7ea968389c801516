//! Columns whose names suggest personal data.

/// Name parts that usually mean personal data.
const TOKENS: &[&str] = &[
    "email",
    "mail",
    "phone",
    "mobile",
    "tel",
    "fax",
    "firstname",
    "lastname",
    "surname",
    "fullname",
    "address",
    "street",
    "zip",
    "postcode",
    "postal",
    "ssn",
    "passport",
    "birth",
    "dob",
    "birthday",
    "iban",
    "ip",
    "salary",
    "tax",
    "nin",
    "sin",
    "ssn",
];

/// Multi-part names that usually mean personal data.
const PAIRS: &[(&str, &str)] = &[
    ("first", "name"),
    ("last", "name"),
    ("full", "name"),
    ("middle", "name"),
    ("maiden", "name"),
    ("user", "name"),
    ("social", "security"),
    ("national", "id"),
    ("card", "number"),
    ("credit", "card"),
    ("account", "number"),
    ("date", "birth"),
    ("birth", "date"),
    ("ip", "address"),
    ("home", "address"),
];

/// Whether a column called `name` probably holds personal data.
pub fn looks_personal(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let parts: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    if lower == "name" || lower == "e_mail" {
        return true;
    }
    if parts.iter().any(|p| TOKENS.contains(p)) {
        return true;
    }
    PAIRS.iter().any(|(a, b)| {
        parts.windows(2).any(|w| w[0] == *a && w[1] == *b) || lower.contains(&format!("{a}{b}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_names_are_recognised() {
        for yes in [
            "email",
            "customer_email",
            "Phone",
            "first_name",
            "lastName",
            "ssn",
            "date_of_birth",
            "birth_date",
            "ip_address",
            "name",
            "home_address",
            "card_number",
        ] {
            assert!(looks_personal(yes), "{yes}");
        }
        for no in [
            "id",
            "price",
            "sku",
            "quantity",
            "status",
            "created_at",
            "title",
            "product_id",
        ] {
            assert!(!looks_personal(no), "{no}");
        }
    }
}
